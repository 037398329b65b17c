"""Digit convnets: LeNet-5 and the Torch demo's convnet, both on 32x32 (28x28 is padded)."""

from __future__ import annotations

import keras
from keras import layers

from kzoo.models.blocks import (
    check_choice,
    check_image_shape,
    check_num_classes,
    check_rate,
    classifier_head,
    pad_to,
    pixel_input,
)
from kzoo.models.specs import register_model

_POOLING = {"max": layers.MaxPooling2D, "avg": layers.AveragePooling2D}


@register_model(
    summary="LeNet-5 (LeCun et al. 1998), digits",
    description=(
        "LeNet-5: conv 6@5x5, pool, conv 16@5x5, pool, conv 120@5x5, dense 84, dense 10. "
        "activation='tanh', pooling='avg' gives the 1998 original; the default relu/max trains "
        "faster."
    ),
    source="LeCun, Bottou, Bengio, Haffner 1998, Gradient-based learning applied to document recognition",
    tags=("mnist", "convnet"),
)
def lenet5(num_classes=10, input_shape=(28, 28, 1), activation="relu", pooling="max", dropout=0.0):
    shape = check_image_shape("lenet5", input_shape, min_side=28)
    check_choice("activation", activation, ("relu", "tanh"))
    pool = _POOLING[check_choice("pooling", pooling, tuple(_POOLING))]
    inputs, x = pixel_input(shape)
    x = pad_to(x, 32)
    x = layers.Conv2D(6, 5, activation=activation, name="c1")(x)
    x = pool(2, name="s2")(x)
    x = layers.Conv2D(16, 5, activation=activation, name="c3")(x)
    x = pool(2, name="s4")(x)
    x = layers.Conv2D(120, 5, activation=activation, name="c5")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(84, activation=activation, name="f6")(x)
    outputs = classifier_head(x, check_num_classes(num_classes), check_rate("dropout", dropout))
    return keras.Model(inputs, outputs, name="lenet5")


@register_model(
    summary="the Torch demo digit convnet, 32x32",
    description=(
        "The Torch demo digit convnet: conv 32@5x5, tanh, maxpool 3/3, conv 64@5x5, tanh, "
        "maxpool 3/3 (64x2x2 features), dense 200, tanh, dense 10, on 32x32 input."
    ),
    source="Torch7 demo train-on-mnist.lua, the 'convnet' model",
    tags=("mnist", "convnet"),
)
def torch_digit_convnet(num_classes=10, input_shape=(28, 28, 1), dropout=0.0):
    shape = check_image_shape("torch_digit_convnet", input_shape, min_side=28)
    inputs, x = pixel_input(shape)
    x = pad_to(x, 32)
    x = layers.Conv2D(32, 5, activation="tanh", name="conv1")(x)
    x = layers.MaxPooling2D(3, strides=3, padding="same", name="pool1")(x)
    x = layers.Conv2D(64, 5, activation="tanh", name="conv2")(x)
    x = layers.MaxPooling2D(3, strides=3, padding="same", name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(200, activation="tanh", name="hidden")(x)
    outputs = classifier_head(x, check_num_classes(num_classes), check_rate("dropout", dropout))
    return keras.Model(inputs, outputs, name="torch_digit_convnet")
