"""Layers and initializers any kzoo model can use: identity-initialised convolutions, a
patch-whitening first convolution fitted to the data, and the tanh-approximate GELU.

>>> x = PatchWhitening(patch_size=2)(x)   # then: model.get_layer(...).adapt(images)
>>> layers.Conv2D(64, 3, kernel_initializer=Dirac())
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers


@keras.saving.register_keras_serializable(package="kzoo")
class Dirac(keras.initializers.Initializer):
    """A conv kernel whose first ``min(in, out)`` filters pass their own input channel through
    unchanged (an identity), the others drawn as PyTorch draws conv kernels (uniform within
    ``1 / sqrt(fan_in)``)."""

    def __init__(self, seed: int | None = None):
        self.seed = seed

    def __call__(self, shape, dtype=None):
        height, width, channels_in, channels_out = shape
        base = keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform", seed=self.seed)
        drawn = base(shape, dtype=dtype)
        count = min(channels_in, channels_out)
        identity = np.zeros(shape, dtype="float32")
        identity[height // 2, width // 2, np.arange(count), np.arange(count)] = 1.0
        is_identity = np.arange(channels_out) < count
        return keras.ops.where(is_identity, keras.ops.cast(identity, drawn.dtype), drawn)

    def get_config(self):
        return {"seed": self.seed}


@keras.saving.register_keras_serializable(package="kzoo")
class PatchWhitening(layers.Conv2D):
    """A ``patch_size`` x ``patch_size`` convolution whose filters whiten the image patches:
    :meth:`adapt` sets them to the eigenvectors of the patches' covariance, each divided by the
    square root of its eigenvalue, with their negatives (so ``2 * patch_size**2 * channels``
    filters). The kernel is never trained; the bias is.
    """

    def __init__(self, patch_size: int = 2, epsilon: float = 5e-4, **kwargs):
        kwargs.pop("filters", None), kwargs.pop("kernel_size", None)
        super().__init__(filters=1, kernel_size=patch_size, padding="valid", use_bias=True,
                         **kwargs)
        self.patch_size, self.epsilon = int(patch_size), float(epsilon)

    def build(self, input_shape):
        self.filters = 2 * self.patch_size ** 2 * int(input_shape[-1])
        super().build(input_shape)
        self.kernel.trainable = False

    def adapt(self, images: np.ndarray, batch_size: int = 500) -> None:
        """Fit the filters to ``images`` (N, H, W, C; as this layer receives them)."""
        side, channels = self.patch_size, images.shape[-1]
        size = side * side * channels
        total, outer, count = np.zeros(size), np.zeros((size, size)), 0
        for start in range(0, len(images), batch_size):
            patches = _patches(np.asarray(images[start:start + batch_size], "float64"), side)
            total += patches.sum(0)
            outer += patches.T @ patches
            count += len(patches)
        mean = total / count
        covariance = outer / count - np.outer(mean, mean)
        values, vectors = np.linalg.eigh(covariance)
        filters = (vectors / np.sqrt(values + self.epsilon)).T[::-1]  # largest variance first
        kernel = np.concatenate([filters, -filters]).reshape(-1, side, side, channels)
        self.kernel.assign(kernel.transpose(1, 2, 3, 0).astype("float32"))

    def get_config(self):
        config = super().get_config()
        for key in ("filters", "kernel_size", "strides", "padding", "use_bias"):
            config.pop(key, None)
        return {**config, "patch_size": self.patch_size, "epsilon": self.epsilon}


def _patches(images: np.ndarray, side: int) -> np.ndarray:
    """Every ``side`` x ``side`` patch of ``images``, flattened in (row, column, channel) order,
    the order of a Keras conv kernel's first three axes."""
    windows = np.lib.stride_tricks.sliding_window_view(images, (side, side), axis=(1, 2))
    # (N, H', W', C, side, side) -> (N * H' * W', side, side, C)
    return windows.transpose(0, 1, 2, 4, 5, 3).reshape(-1, side * side * images.shape[-1])


@keras.saving.register_keras_serializable(package="kzoo")
class TanhGELU(layers.Layer):
    """GELU with its tanh approximation: close to the exact GELU, and far faster on CPUs."""

    def call(self, inputs):
        return keras.activations.gelu(inputs, approximate=True)


def activation_layer(name: str, layer_name: str) -> layers.Layer:
    """``gelu_tanh`` as :class:`TanhGELU`, any other name as Keras's ``Activation``."""
    if name == "gelu_tanh":
        return TanhGELU(name=layer_name)
    return layers.Activation(name, name=layer_name)
