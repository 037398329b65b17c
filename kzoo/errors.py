"""The one exception kzoo raises for bad input, so callers and the CLI can catch it."""


class KzooError(ValueError):
    """Bad input or a missing resource; the message says what was given and what to do."""
