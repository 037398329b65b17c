"""The model registry: ``@register_model``, ``build``, ``list_models``, ``describe``.

A model is a builder function registered with a :class:`ModelSpec`. ``build`` drops overrides
that are ``None`` (so a CLI or a tuner can pass every flag) and rejects unknown ones with the
list of accepted names.

Listing and describing the zoo's own models needs no Keras: their specs (and parameter counts)
are also kept in ``models/index.json``, written by ``python -m kzoo.models.catalog`` from the builders
themselves and checked against them by the tests, so ``kzoo list`` answers at once. Building a
model imports its family, and Keras, then.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kzoo.errors import KzooError
from kzoo.models.specs import REGISTERED, ModelSpec, register_model  # noqa: F401  (register_model: re-exported)

if TYPE_CHECKING:
    import keras

INDEX = Path(__file__).resolve().parent / "index.json"


def _from_index(name: str, entry: dict[str, Any]) -> ModelSpec:
    shape = entry["input_shape"]
    options = {key: tuple(value) if key == "input_shape" and value else value
               for key, value in entry["options"].items()}
    return ModelSpec(name, None, entry["summary"], entry["description"], entry["source"],
                     tuple(shape) if shape else None, entry["num_classes"],
                     tuple(entry["tags"]), options, entry["parameters"])


_INDEX_CACHE: dict[str, ModelSpec] | None = None


def _index() -> dict[str, ModelSpec]:
    """The zoo's own models as ``models/index.json`` lists them ({} if it is missing)."""
    global _INDEX_CACHE
    if _INDEX_CACHE is None:
        try:
            entries = json.loads(INDEX.read_text())
        except (OSError, ValueError):
            entries = {}
        _INDEX_CACHE = {name: _from_index(name, entry) for name, entry in entries.items()}
    return _INDEX_CACHE


def _known() -> dict[str, ModelSpec]:
    """Every spec: the index's, and those registered in this process (which win)."""
    if not _index():
        _ensure_models_loaded()
    return {**_index(), **REGISTERED}


def _ensure_models_loaded() -> None:
    import kzoo.models.families  # noqa: F401  (registers every family on import)


def loaded_specs() -> dict[str, ModelSpec]:
    """The specs of every model, their families imported (Keras with them)."""
    _ensure_models_loaded()
    return dict(REGISTERED)


def get_spec(name: str) -> ModelSpec:
    """The spec of a registered model; an unknown name fails with close matches."""
    known = _known()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
        raise KzooError(f"unknown model {name!r}; {hint}(`kzoo list` shows all models)")
    return known[name]


def list_models(pattern: str = "*", tag: str | None = None) -> list[str]:
    """Names of registered models matching a shell-style ``pattern`` and, if given, a ``tag``.

    >>> list_models("lenet*")
    ['lenet5']
    """
    return sorted(
        name
        for name, spec in _known().items()
        if fnmatch.fnmatchcase(name, pattern) and (tag is None or tag in spec.tags)
    )


# Options where ``None`` is a value, not "not given": ``weights=None`` means random init.
_NONE_IS_A_VALUE = frozenset({"weights"})


def build(name: str, **overrides: Any) -> keras.Model:
    """Build a registered model as a plain, uncompiled ``keras.Model``.

    Overrides equal to ``None`` are ignored, except ``weights=None``, which asks for random
    initialisation (the ``keras.applications`` meaning). Every model takes raw pixel values
    (0-255) and rescales them itself.

    >>> model = build("lenet5", num_classes=10)
    """
    spec = get_spec(name)
    if spec.builder is None:  # known from the index: import its family now
        _ensure_models_loaded()
        spec = REGISTERED[name]
    given = {
        key: value
        for key, value in overrides.items()
        if value is not None or (key in _NONE_IS_A_VALUE and key in spec.options)
    }
    unknown = sorted(set(given) - set(spec.options))
    if unknown:
        accepted = ", ".join(sorted(spec.options)) or "none"
        raise KzooError(
            f"model {name!r} has no option {', '.join(repr(u) for u in unknown)}; "
            f"it accepts: {accepted}"
        )
    if "input_shape" in given:
        given["input_shape"] = tuple(given["input_shape"])
    return spec.builder(**given)


def parameter_count(name: str) -> int:
    """Trainable and non-trainable parameters of the model with its default options."""
    known = get_spec(name).parameters
    return known if known is not None else count_parameters(name)


def count_parameters(name: str) -> int:
    """:func:`parameter_count`, by building the model."""
    return build(name, **_light_weights(name)).count_params()


def _light_weights(name: str) -> dict[str, Any]:
    # Counting parameters must never download pretrained weights.
    return {"weights": None} if "weights" in get_spec(name).options else {}


def load_model(path: str, safe_mode: bool = True) -> keras.Model:
    """Load a saved ``.keras`` model, with kzoo's own layers registered first. A model that
    holds Python code (a ``Lambda`` layer) is refused in ``safe_mode``, with a one-line error."""
    import keras

    _ensure_models_loaded()
    try:
        return keras.saving.load_model(path, safe_mode=safe_mode)
    except ValueError as error:
        if "safe_mode" not in str(error):
            raise
        raise KzooError(
            f"{str(path)!r} holds Python code (a Lambda layer), which could run anything when "
            "loaded, so kzoo does not load it; load it yourself with "
            "keras.saving.load_model(path, safe_mode=False) if you trust where it came from"
        ) from None
