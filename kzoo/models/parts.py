"""The contract of a fine-tunable classifier: pixels in, an optional preprocessing, a
**backbone** (a nested model, pretrained), a **pooling** layer, and a **head** after it.

A builder declares the parts by giving the backbone and the pooling layer the names below
(``BACKBONE`` and ``POOLING`` of :mod:`kzoo.models.blocks`), and this module is the
one place that reads that declaration. Everything else (fine-tuning, features, explanations,
the notebook helpers) asks :func:`classifier_parts` for the parts, never a layer by name. The
declaration is kept in a saved ``model.keras``, so a loaded model has the same parts.

>>> parts = classifier_parts(kzoo.build("mobilenet_v2", weights=None))
>>> parts.backbone, parts.pooling, parts.head
"""

from __future__ import annotations

from dataclasses import dataclass

import keras

from kzoo.errors import KzooError
from kzoo.models.blocks import BACKBONE, POOLING


@dataclass(frozen=True)
class ClassifierParts:
    """A classifier's parts. ``head`` lists the layers after the pooling, in order; ``backbone``
    is ``None`` for a model trained from scratch that pools its features (airbench)."""

    model: keras.Model
    backbone: keras.Model | None
    pooling: keras.layers.Layer
    head: tuple[keras.layers.Layer, ...]

    def features_model(self) -> keras.Model:
        """Images in, pooled features out (the layers shared with the classifier)."""
        return keras.Model(self.model.inputs, self.pooling.output, name="features")

    def head_model(self, skip: type | tuple[type, ...] = ()) -> keras.Model:
        """The head as a model on pooled features (weights shared), without layers of the
        ``skip`` types (such as an identity layer that only carries metadata)."""
        inputs = keras.Input(shape=self.pooling.output.shape[1:], name="features")
        x = inputs
        for layer in self.head:
            if not isinstance(layer, skip):
                x = layer(x)
        return keras.Model(inputs, x, name="head")

    def preprocessing(self) -> list[keras.layers.Layer]:
        """The layers between the pixels and the backbone (rescaling and the like)."""
        if self.backbone is None:
            return []
        layers = self.model.layers
        return layers[1:layers.index(self.backbone)]


def _layer(model: keras.Model, name: str) -> keras.layers.Layer | None:
    return next((layer for layer in model.layers if layer.name == name), None)


def classifier_parts(model: keras.Model, *, need_backbone: bool = True) -> ClassifierParts:
    """The declared parts of ``model``; a model without them (or, with ``need_backbone``,
    without a pretrained backbone) fails with one line naming the models that have them."""
    backbone = _layer(model, BACKBONE)
    pooling = _layer(model, POOLING)
    if pooling is None or (need_backbone and not isinstance(backbone, keras.Model)):
        from kzoo.models.registry import list_models

        raise KzooError(
            f"model {model.name!r} has no pretrained backbone to fine-tune; pick one of "
            f"{', '.join(list_models(tag='pretrained'))} (`kzoo list --tag pretrained`)")
    layers = model.layers
    return ClassifierParts(model, backbone if isinstance(backbone, keras.Model) else None,
                           pooling, tuple(layers[layers.index(pooling) + 1:]))
