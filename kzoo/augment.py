"""Named augmentation presets: ``keras.layers.Pipeline`` stacks of Keras preprocessing layers.

They run in the ``tf.data`` pipeline on raw 0-255 pixels during training only, and are never
saved inside a trained model. A ``Pipeline`` (not a ``keras.Sequential``) keeps its layers on
TensorFlow ops inside ``dataset.map`` whatever the Keras backend, so the same presets work on
JAX; on TensorFlow both give identical images.
"""

from __future__ import annotations

import difflib

import keras
from keras import layers

from kzoo.errors import KzooError


def _digits(seed):
    return [
        layers.RandomRotation(0.03, fill_mode="constant", seed=seed),
        layers.RandomTranslation(0.08, 0.08, fill_mode="constant", seed=seed),
        layers.RandomZoom(0.08, fill_mode="constant", seed=seed),
    ]


def _cifar(seed):
    return [
        layers.RandomFlip("horizontal", seed=seed),
        layers.RandomTranslation(0.125, 0.125, fill_mode="reflect", seed=seed),
    ]


def _imagenet(seed):
    return [
        layers.RandomFlip("horizontal", seed=seed),
        layers.RandomRotation(0.05, seed=seed),
        layers.RandomZoom(0.15, seed=seed),
        layers.RandomContrast(0.2, seed=seed),
    ]


PRESETS = {
    "none": lambda seed: [],
    "digits": _digits,  # small rotation, shift and zoom; no flips (a flipped 2 is no digit)
    "cifar": _cifar,  # horizontal flip and a shift of up to 4 pixels (the classic pad-and-crop)
    "imagenet": _imagenet,  # flip, rotation, zoom, contrast
}


def augmentation(name: str, seed: int | None = None) -> keras.layers.Pipeline | None:
    """The preset ``name`` as a ``keras.layers.Pipeline``, or ``None`` for ``"none"``.

    >>> augment = augmentation("cifar", seed=0)
    >>> dataset = dataset.map(lambda x, y: (augment(x, training=True), y))
    """
    if name not in PRESETS:
        close = difflib.get_close_matches(name, PRESETS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise KzooError(
            f"unknown augmentation preset {name!r}; {hint}expected one of {', '.join(PRESETS)}"
        )
    stack = PRESETS[name](seed)
    return keras.layers.Pipeline(stack, name=f"augment_{name}") if stack else None
