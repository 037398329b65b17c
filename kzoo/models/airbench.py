"""airbench: the network of Keller Jordan's airbench94 (2024, "94% on CIFAR-10 in 3.29 seconds
on a single GPU"), written for Keras from the paper's description.

A 2x2 patch-whitening convolution fitted to the training images (:class:`PatchWhitening`,
adapted by ``kzoo train`` before the first step), then three blocks of conv, 2x2 max-pool,
batch norm, activation, conv, batch norm, activation (widths 64/256/256; convs without bias,
initialised as identities; batch norm with momentum 0.6 and no scale), a global max-pool, a
bias-free linear layer and a fixed scale of the logits (1/9) before the softmax.
"""

from __future__ import annotations

import keras
from keras import layers

from kzoo.models.blocks import POOLING, check_choice, check_image_shape, check_num_classes
from kzoo.models.layers import Dirac, PatchWhitening, activation_layer
from kzoo.models.specs import register_model

ACTIVATIONS = ("gelu", "gelu_tanh", "relu", "silu")


def _conv_group(x, width: int, name: str, activation: str):
    """conv, pool, batch norm, activation, conv, batch norm, activation."""
    def norm(x, index):
        return layers.BatchNormalization(momentum=0.6, epsilon=1e-12, scale=False,
                                         name=f"{name}_bn{index}")(x)

    x = layers.Conv2D(width, 3, padding="same", use_bias=False, kernel_initializer=Dirac(),
                      name=f"{name}_conv1")(x)
    x = layers.MaxPooling2D(2, name=f"{name}_pool")(x)
    x = activation_layer(activation, f"{name}_act1")(norm(x, 1))
    x = layers.Conv2D(width, 3, padding="same", use_bias=False, kernel_initializer=Dirac(),
                      name=f"{name}_conv2")(x)
    return activation_layer(activation, f"{name}_act2")(norm(x, 2))


@register_model(
    summary="airbench94 net: whitening conv, 3 conv blocks",
    description=(
        "The airbench94 CIFAR-10 net: a 2x2 patch-whitening conv fitted to the training "
        "images, three conv-pool-BN-act-conv-BN-act blocks (64/256/256, identity-initialised), "
        "global max-pool, linear layer, logits scaled by 1/9."
    ),
    source="Jordan 2024, 94% on CIFAR-10 in 3.29 seconds on a single GPU (airbench94)",
    tags=("cifar10", "convnet"),
)
def airbench(num_classes=10, input_shape=(32, 32, 3), widths=(64, 256, 256),
             activation="gelu_tanh", logit_scale=1 / 9):
    shape = check_image_shape("airbench", input_shape, min_side=2 ** len(widths) + 1)
    activation = check_choice("activation", activation, ACTIVATIONS)
    inputs = keras.Input(shape, name="image")
    # Normalization and whitening compute in float32 whatever the policy: the whitening filters
    # multiply small differences of neighbouring pixels by up to ~30, and in bfloat16 (8
    # significant bits) the rounding of the inputs comes out as 10-30% noise on those channels.
    x = layers.Normalization(axis=-1, name="normalize", dtype="float32")(inputs)  # adapted
    x = PatchWhitening(patch_size=2, name="whiten", dtype="float32")(x)
    x = activation_layer(activation, "whiten_act")(x)
    for index, width in enumerate(widths, start=1):
        x = _conv_group(x, int(width), f"block{index}", activation)
    x = layers.GlobalMaxPooling2D(name=POOLING)(x)
    x = layers.Dense(check_num_classes(num_classes), use_bias=False, name="logits",
                     kernel_initializer=keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform"),
                     dtype="float32")(x)
    x = layers.Rescaling(float(logit_scale), name="logit_scale", dtype="float32")(x)
    outputs = layers.Activation("softmax", dtype="float32", name="predictions")(x)
    return keras.Model(inputs, outputs, name="airbench")
