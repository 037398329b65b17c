"""Recipes: the :class:`Recipe` type, the search-range language, and the zoo of YAML files."""
