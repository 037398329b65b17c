"""The ``kzoo`` command: one module per command group."""
