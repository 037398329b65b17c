"""Optimizers as recipes configure them: the learning-rate schedules, per-layer learning-rate
multipliers (discriminative learning rates, which Keras lacks), and class weights.

>>> optimizer = make_optimizer(recipe.optimizer, steps_per_epoch=100, epochs=10)
>>> optimizer = with_lr_multipliers(optimizer, {"block_1*": 0.1})
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np

from kzoo.recipes.recipe import Optimizer, Recipe


def make_optimizer(config: Optimizer, steps_per_epoch: int, epochs: int) -> keras.optimizers.Optimizer:
    """The recipe's optimizer, its learning rate annealed by the recipe's schedule."""
    rate: Any = config.learning_rate
    options = config.schedule_options
    schedules = keras.optimizers.schedules
    if config.schedule == "cosine":
        rate = schedules.CosineDecay(rate, decay_steps=max(1, steps_per_epoch * epochs))
    elif config.schedule == "exponential":
        rate = schedules.ExponentialDecay(
            rate, decay_steps=max(1, round(steps_per_epoch * options["decay_epochs"])),
            decay_rate=options["decay_rate"],
        )
    elif config.schedule == "step":
        rate = schedules.ExponentialDecay(
            rate, decay_steps=steps_per_epoch * options["every_epochs"],
            decay_rate=options["factor"], staircase=True,
        )
    elif config.schedule == "triangle":
        rate = Triangle(rate, total_steps=max(1, steps_per_epoch * epochs), **options)
    decay = config.weight_decay or None
    if config.name == "sgd":
        optimizer = keras.optimizers.SGD(rate, momentum=config.momentum,
                                         nesterov=config.nesterov, weight_decay=decay)
    elif config.name == "rmsprop":
        optimizer = keras.optimizers.RMSprop(rate, momentum=config.momentum, weight_decay=decay)
    else:
        optimizer = keras.optimizers.Adam(rate, weight_decay=decay)
    if config.lr_multipliers:
        optimizer = with_lr_multipliers(optimizer, config.lr_multipliers)
    return optimizer


@keras.saving.register_keras_serializable(package="kzoo")
class Triangle(keras.optimizers.schedules.LearningRateSchedule):
    """A one-cycle triangle: the rate rises linearly from ``start`` times ``rate`` to ``rate``
    at fraction ``peak`` of ``total_steps``, then falls linearly to ``end`` times ``rate``."""

    def __init__(self, rate: float, total_steps: int, start: float = 0.2, peak: float = 0.25,
                 end: float = 0.05):
        self.rate, self.total_steps = float(rate), int(total_steps)
        self.start, self.peak, self.end = float(start), float(peak), float(end)

    def __call__(self, step):
        ops = keras.ops
        progress = ops.cast(step, "float32") / self.total_steps
        rising = self.start + (1 - self.start) * progress / self.peak
        falling = 1 + (self.end - 1) * (progress - self.peak) / (1 - self.peak)
        factor = ops.where(progress < self.peak, rising, ops.maximum(falling, self.end))
        return self.rate * factor

    def get_config(self):
        return {"rate": self.rate, "total_steps": self.total_steps, "start": self.start,
                "peak": self.peak, "end": self.end}


def constant_rate(config: Optimizer) -> Optimizer:
    """``config`` with its schedule taken off: the learning rate stays what it is set to (the
    learning-rate finder sets it step by step)."""
    return dataclasses.replace(config, schedule="constant", schedule_options={})


def class_weights(recipe: Recipe, labels: np.ndarray, num_classes: int) -> dict[int, float] | None:
    """Keras ``class_weight`` for the recipe's ``class_weight`` setting: ``balanced`` weighs
    each class by ``examples / (classes * examples of the class)``; ``None`` otherwise."""
    if recipe.class_weight != "balanced":
        return None
    counts = np.bincount(np.asarray(labels, dtype=np.int64).ravel(), minlength=num_classes)
    total, present = counts.sum(), max(int((counts > 0).sum()), 1)
    return {index: float(total / (present * count)) if count else 0.0
            for index, count in enumerate(counts)}


def discriminative_multipliers(layers: Sequence[keras.layers.Layer], lowest: float) -> dict[str, float]:
    """Learning-rate multipliers falling geometrically from 1 at the top layer to ``lowest``
    at the bottom one (``layers`` bottom first), keyed by layer name.
    """
    count = len(layers)
    if count < 2 or lowest == 1.0:
        return {}
    return {layer.name: lowest ** ((count - 1 - index) / (count - 1)) for index, layer in enumerate(layers)}


def multiplier_for(path: str, multipliers: Mapping[str, float]) -> float:
    """The multiplier of the first pattern matching a variable's path (``"block_16_*"``) or its
    layer name; 1 where none does.
    """
    layer = path.split("/")[0]
    for pattern, value in multipliers.items():
        if fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(layer, pattern):
            return float(value)
    return 1.0


class LayerwiseLearningRates:
    """Mixed into a Keras optimizer class: each variable's learning rate is multiplied by
    :func:`multiplier_for` its path. Made by :func:`with_lr_multipliers`.
    """

    def __init__(self, *args, lr_multipliers: Mapping[str, float] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lr_multipliers = {str(k): float(v) for k, v in (lr_multipliers or {}).items()}
        self._scales: tuple[float, ...] = ()

    def build(self, variables):
        super().build(variables)
        self._scales = tuple(multiplier_for(v.path, self.lr_multipliers) for v in variables)

    def update_step(self, gradient, variable, learning_rate):
        scale = self._scales[self._get_variable_index(variable)]
        if scale != 1.0:
            learning_rate = learning_rate * scale
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "lr_multipliers": dict(self.lr_multipliers)}


_LAYERWISE: dict[type, type] = {}


def with_lr_multipliers(
    optimizer: keras.optimizers.Optimizer, multipliers: Mapping[str, float]
) -> keras.optimizers.Optimizer:
    """A fresh copy of ``optimizer`` whose learning rate is scaled per variable: discriminative
    learning rates, which Keras lacks. ``multipliers`` maps patterns of variable paths or layer
    names to factors; unmatched variables keep the full rate.

    >>> optimizer = with_lr_multipliers(keras.optimizers.Adam(1e-4), {"block_1*": 0.1})
    """
    base = type(optimizer)
    if base not in _LAYERWISE:
        _LAYERWISE[base] = type(f"Layerwise{base.__name__}", (LayerwiseLearningRates, base), {})
    return _LAYERWISE[base].from_config({**optimizer.get_config(), "lr_multipliers": dict(multipliers)})
