"""Models: the registry, specs, catalog and weights, shared blocks and layers, and one module
per family (listed in :mod:`kzoo.models.families`)."""
