"""The model registry: ``@register_model``, ``build``, ``list_models``, ``describe``.

A model is a builder function registered with a :class:`ModelSpec`. ``build`` drops overrides
that are ``None`` (so a CLI or a tuner can pass every flag) and rejects unknown ones with the
list of accepted names.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import keras

from kzoo.errors import KzooError

_REGISTRY: dict[str, ModelSpec] = {}


@dataclass(frozen=True)
class ModelSpec:
    """What the zoo knows about one model."""

    name: str
    builder: Callable[..., keras.Model]
    summary: str
    description: str
    source: str
    input_shape: tuple[int, ...] | None
    num_classes: int | None
    tags: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)


def register_model(
    *,
    summary: str,
    description: str,
    source: str,
    tags: tuple[str, ...] = (),
) -> Callable[[Callable[..., keras.Model]], Callable[..., keras.Model]]:
    """Register a builder under its function name; ``summary`` is its one-line listing.

    The default input shape, class count and every other option are read from the builder's
    keyword defaults, so the signature is the single place they are written.
    """

    def decorate(builder: Callable[..., keras.Model]) -> Callable[..., keras.Model]:
        name = builder.__name__
        if name in _REGISTRY:
            raise KzooError(f"model {name!r} is registered twice")
        defaults = {
            key: param.default
            for key, param in inspect.signature(builder).parameters.items()
            if param.default is not inspect.Parameter.empty
        }
        _REGISTRY[name] = ModelSpec(
            name=name,
            builder=builder,
            summary=summary,
            description=description,
            source=source,
            input_shape=defaults.get("input_shape"),
            num_classes=defaults.get("num_classes"),
            tags=tuple(tags),
            options=defaults,
        )
        return builder

    return decorate


def _ensure_models_loaded() -> None:
    import kzoo.models  # noqa: F401  (registers every family on import)


def get_spec(name: str) -> ModelSpec:
    """The spec of a registered model; an unknown name fails with close matches."""
    _ensure_models_loaded()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
        raise KzooError(f"unknown model {name!r}; {hint}(`kzoo list` shows all models)")
    return _REGISTRY[name]


def list_models(pattern: str = "*", tag: str | None = None) -> list[str]:
    """Names of registered models matching a shell-style ``pattern`` and, if given, a ``tag``.

    >>> list_models("lenet*")
    ['lenet5']
    """
    _ensure_models_loaded()
    return sorted(
        name
        for name, spec in _REGISTRY.items()
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
    return build(name, **_light_weights(name)).count_params()


def _light_weights(name: str) -> dict[str, Any]:
    # Counting parameters must never download pretrained weights.
    return {"weights": None} if "weights" in get_spec(name).options else {}


def load_model(path: str, safe_mode: bool = True) -> keras.Model:
    """Load a saved ``.keras`` model, with kzoo's own layers registered first."""
    _ensure_models_loaded()
    return keras.saving.load_model(path, safe_mode=safe_mode)
