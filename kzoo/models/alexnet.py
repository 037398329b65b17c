"""AlexNet-style convnet: 5 conv layers, 3 dense layers, ReLU, dropout, optional batch norm.

Inputs of 96 pixels or more use the 2012 stem (11x11 stride 4, overlapping 3x3 pools); smaller
inputs such as CIFAR-10's 32x32 use 3x3 convs with 2x2 pools, so the same five-conv, three-dense
shape fits them. ``width`` scales every layer's filters.
"""

from __future__ import annotations

import keras
from keras import layers

from kzoo.errors import KzooError
from kzoo.models.blocks import (
    check_image_shape,
    check_int,
    check_num_classes,
    check_rate,
    classifier_head,
    pixel_input,
)
from kzoo.models.specs import register_model

_LARGE_INPUT = 96


def _pool(large: bool, name: str):
    """Overlapping 3x3 stride-2 pools on large inputs, 2x2 pools on small ones."""
    return layers.MaxPooling2D(3, strides=2, name=name) if large else layers.MaxPooling2D(2, name=name)


def _conv(x, filters, kernel, name, strides=1, batch_norm=False):
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", name=name,
                      use_bias=not batch_norm)(x)
    if batch_norm:
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


@register_model(
    summary="AlexNet-style, scales down to CIFAR-10",
    description=(
        "AlexNet-style: 5 conv (96, 256, 384, 384, 256 filters times width), 3 dense, ReLU, "
        "dropout, optional batch norm; a 3x3 stem for inputs under 96 pixels such as CIFAR-10."
    ),
    source="Krizhevsky, Sutskever, Hinton 2012, ImageNet classification with deep convolutional neural networks",
    tags=("cifar10", "imagenet-arch", "convnet"),
)
def alexnet(
    num_classes=1000,
    input_shape=(224, 224, 3),
    dropout=0.5,
    batch_norm=False,
    width=1.0,
    dense_units=4096,
):
    shape = check_image_shape("alexnet", input_shape, min_side=16)
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not 0 < width <= 4:
        raise KzooError(f"width={width!r} is invalid; expected a number in (0, 4]")
    check_int("dense_units", dense_units)
    dropout = check_rate("dropout", dropout)
    filters = [max(8, round(f * width)) for f in (96, 256, 384, 384, 256)]
    large = min(shape[:2]) >= _LARGE_INPUT

    inputs, x = pixel_input(shape)
    x = _conv(x, filters[0], 11 if large else 3, "conv1", strides=4 if large else 1,
              batch_norm=batch_norm)
    x = _pool(large, "pool1")(x)
    x = _conv(x, filters[1], 5 if large else 3, "conv2", batch_norm=batch_norm)
    x = _pool(large, "pool2")(x)
    x = _conv(x, filters[2], 3, "conv3", batch_norm=batch_norm)
    x = _conv(x, filters[3], 3, "conv4", batch_norm=batch_norm)
    x = _conv(x, filters[4], 3, "conv5", batch_norm=batch_norm)
    x = _pool(large, "pool5")(x)
    x = layers.Flatten(name="flatten")(x)
    for index in (6, 7):
        x = layers.Dense(dense_units, activation="relu", name=f"fc{index}")(x)
        if dropout:
            x = layers.Dropout(dropout, name=f"fc{index}_dropout")(x)
    outputs = classifier_head(x, check_num_classes(num_classes))
    return keras.Model(inputs, outputs, name="alexnet")
