"""Model specs and ``@register_model``, which records them: what the zoo knows of a model,
read from its builder's signature, so the signature is the one place a default is written.

>>> @register_model(summary="...", description="...", source="...", tags=("mnist",))
... def my_net(num_classes=10, input_shape=(28, 28, 1)): ...
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kzoo.errors import KzooError

if TYPE_CHECKING:
    import keras

REGISTERED: dict[str, ModelSpec] = {}  # name: spec, in the order registered


@dataclass(frozen=True)
class ModelSpec:
    """What the zoo knows about one model (``builder`` is ``None`` in a spec read from the
    index, until its family is imported)."""

    name: str
    builder: Callable[..., keras.Model] | None
    summary: str
    description: str
    source: str
    input_shape: tuple[int, ...] | None
    num_classes: int | None
    tags: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)
    parameters: int | None = None  # with the default options, where known without building

    def to_index(self) -> dict[str, Any]:
        """The spec as an entry of ``models/index.json``."""
        return {"summary": self.summary, "description": self.description, "source": self.source,
                "input_shape": self.input_shape, "num_classes": self.num_classes,
                "tags": list(self.tags), "options": self.options,
                "parameters": self.parameters}


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
        if name in REGISTERED:
            raise KzooError(f"model {name!r} is registered twice")
        defaults = {
            key: param.default
            for key, param in inspect.signature(builder).parameters.items()
            if param.default is not inspect.Parameter.empty
        }
        REGISTERED[name] = ModelSpec(
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
