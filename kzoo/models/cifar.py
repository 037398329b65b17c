"""The TFLearn CIFAR-10 convnets: one set of layers, and three sets with dropout and L2."""

from __future__ import annotations

import keras
from keras import layers, regularizers

from kzoo.models.blocks import (
    check_image_shape,
    check_non_negative,
    check_num_classes,
    check_rate,
    classifier_head,
    pixel_input,
)
from kzoo.models.specs import register_model

_SOURCE = "TFLearn article in the seeds (CIFAR-10 convnet, tflearn/examples/images/convnet_cifar10.py)"


def _convnet(name, filters, num_classes, input_shape, dropout, l2):
    """Conv blocks (a list of filter counts per block, each block ending in a 2x2 max-pool),
    then dense 512 relu, dropout and the softmax head. Same padding, as in TFLearn."""
    min_side = 2 ** len(filters)
    shape = check_image_shape(name, input_shape, min_side=min_side)
    regularizer = regularizers.L2(check_non_negative("l2", l2)) if l2 else None
    inputs, x = pixel_input(shape)
    for block, block_filters in enumerate(filters, start=1):
        for index, width in enumerate(block_filters, start=1):
            x = layers.Conv2D(
                width, 3, padding="same", activation="relu",
                kernel_regularizer=regularizer, name=f"conv{block}_{index}",
            )(x)
        x = layers.MaxPooling2D(2, name=f"pool{block}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(512, activation="relu", kernel_regularizer=regularizer, name="fc")(x)
    outputs = classifier_head(x, check_num_classes(num_classes), check_rate("dropout", dropout))
    return keras.Model(inputs, outputs, name=name)


@register_model(
    summary="CIFAR-10 convnet, one set of layers (TFLearn)",
    description="One set of layers: conv 32@3x3 relu, maxpool 2, dense 512 relu, dense 10.",
    source=_SOURCE,
    tags=("cifar10", "convnet"),
)
def cifar_convnet(num_classes=10, input_shape=(32, 32, 3), dropout=0.0, l2=0.0):
    return _convnet("cifar_convnet", [[32]], num_classes, input_shape, dropout, l2)


@register_model(
    summary="CIFAR-10 convnet, three sets, dropout, L2 (TFLearn)",
    description=(
        "Three sets: conv 32, pool, conv 64, conv 64, pool, dense 512, dropout, dense 10; "
        "dropout rate and L2 weight decay are options."
    ),
    source=_SOURCE,
    tags=("cifar10", "convnet"),
)
def cifar_convnet_deep(num_classes=10, input_shape=(32, 32, 3), dropout=0.5, l2=0.0):
    return _convnet("cifar_convnet_deep", [[32], [64, 64]], num_classes, input_shape, dropout, l2)
