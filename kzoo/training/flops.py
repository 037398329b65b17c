"""How much arithmetic a model does, and the ``steps_per_execution`` that follows from it.

FLOPs count a multiply and an add as two, for the convolutions and dense layers (everything
else is a rounding error in these models); a training step costs about three forward passes
(forward, and the gradients with respect to inputs and weights).
"""

from __future__ import annotations

import math

import keras

# The rule for steps_per_execution. Each call into the compiled train step costs a few
# milliseconds of fixed overhead on TensorFlow's CPU runtime (measured on LeNet-5: an epoch of
# 422 steps took about 5.3 s one step a call and 3.4 s at 32, about 4.5 ms a step saved). A step
# of less than SMALL_STEP_FLOPS of training arithmetic (about 50 ms of work at the ~100 GFLOP/s
# such small layers reach) pays a noticeable share of its time in that overhead, so enough
# steps run per call to make up SMALL_STEP_FLOPS, at most MAX_STEPS_PER_EXECUTION. LeNet-5 at
# batch 128 (0.32 GFLOP a step) asks for 16; the CIFAR nets, AlexNet and airbench get 1. The
# trainers then take the largest divisor of an epoch's steps (dividing_steps).
SMALL_STEP_FLOPS = 5e9
MAX_STEPS_PER_EXECUTION = 32
TRAINING_PASSES = 3


def _shape(value) -> tuple:
    return tuple(value) if not isinstance(value, list) else tuple(value[0])


def layer_flops(layer: keras.layers.Layer) -> int:
    """Forward FLOPs of one layer for one example; nested models are counted through."""
    if isinstance(layer, keras.Model):
        return forward_flops(layer)
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
        out = _shape(layer.output.shape)
        positions = math.prod(side for side in out[1:-1])
        kernel = math.prod(layer.kernel.shape)  # (kh, kw, in, out) or (kh, kw, in, multiplier)
        groups = getattr(layer, "groups", 1) or 1
        return 2 * positions * kernel // (1 if isinstance(layer, keras.layers.DepthwiseConv2D)
                                          else groups)
    if isinstance(layer, keras.layers.Dense):
        positions = math.prod(side for side in _shape(layer.output.shape)[1:-1])
        return 2 * max(positions, 1) * math.prod(layer.kernel.shape)
    return 0


def forward_flops(model: keras.Model) -> int:
    """Forward FLOPs of ``model`` for one example."""
    return sum(layer_flops(layer) for layer in model.layers)


def training_flops(model: keras.Model, examples: int = 1) -> int:
    """FLOPs of training on ``examples`` examples (three forward passes each)."""
    return TRAINING_PASSES * forward_flops(model) * examples


def dividing_steps(steps_per_execution: int, steps_per_epoch: int) -> int:
    """The largest number of steps a call, at most ``steps_per_execution``, that divides an
    epoch's steps: Keras 3.15 drops the steps of a last partial call of an epoch."""
    return max(d for d in range(1, max(1, steps_per_execution) + 1) if steps_per_epoch % d == 0)


def steps_per_execution_for(setting: int | str, model: keras.Model, batch_size: int,
                            steps_per_epoch: int) -> int:
    """A recipe's ``steps_per_execution`` (a number, or ``"auto"``) as the number to compile
    with: :func:`auto_steps_per_execution` for ``auto``, then :func:`dividing_steps`."""
    if setting == "auto":
        setting = auto_steps_per_execution(model, batch_size)
    return dividing_steps(setting, steps_per_epoch)


def auto_steps_per_execution(model: keras.Model, batch_size: int) -> int:
    """Steps per call into the compiled train step: enough to make up
    :data:`SMALL_STEP_FLOPS` of arithmetic, between 1 and :data:`MAX_STEPS_PER_EXECUTION`."""
    step = max(training_flops(model, batch_size), 1)
    return int(min(MAX_STEPS_PER_EXECUTION, max(1, math.ceil(SMALL_STEP_FLOPS / step))))
