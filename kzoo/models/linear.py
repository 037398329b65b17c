"""Fully connected models: softmax regression, the Torch demo's MLP, the logic-gate perceptron."""

from __future__ import annotations

import keras
from keras import layers

from kzoo.errors import KzooError
from kzoo.models.blocks import (
    check_choice,
    check_image_shape,
    check_int,
    check_num_classes,
    check_rate,
    classifier_head,
    pixel_input,
)
from kzoo.models.specs import register_model


@register_model(
    summary="softmax regression on flattened pixels (MNIST)",
    description="Softmax regression: one Dense layer with softmax on the flattened pixels.",
    source="Keras article in the seeds (MNIST softmax regression, ~92%)",
    tags=("mnist", "linear"),
)
def softmax_regression(num_classes=10, input_shape=(28, 28, 1)):
    shape = check_image_shape("softmax_regression", input_shape, min_side=1)
    inputs, x = pixel_input(shape)
    x = layers.Flatten(name="flatten")(x)
    outputs = classifier_head(x, check_num_classes(num_classes))
    return keras.Model(inputs, outputs, name="softmax_regression")


@register_model(
    summary="one hidden layer MLP (Torch demo, MNIST)",
    description="One fully connected hidden layer (2048 tanh units) on the flattened pixels.",
    source="Torch7 demo train-on-mnist.lua, the 'mlp' model",
    tags=("mnist",),
)
def mlp(num_classes=10, input_shape=(28, 28, 1), hidden_units=2048, activation="tanh", dropout=0.0):
    shape = check_image_shape("mlp", input_shape, min_side=1)
    check_int("hidden_units", hidden_units)
    check_choice("activation", activation, ("tanh", "relu", "sigmoid"))
    inputs, x = pixel_input(shape)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(hidden_units, activation=activation, name="hidden")(x)
    outputs = classifier_head(x, check_num_classes(num_classes), check_rate("dropout", dropout))
    return keras.Model(inputs, outputs, name="mlp")


@register_model(
    summary="a sigmoid unit for OR/AND; XOR with a hidden layer",
    description="One sigmoid unit on two inputs (OR/AND); with hidden_units > 0 it learns XOR.",
    source="TFLearn article in the seeds (logical operators)",
    tags=("logic",),
)
def logic_gate(hidden_units=0, input_shape=(2,)):
    check_int("hidden_units", hidden_units, minimum=0)
    if tuple(input_shape) != (2,):
        raise KzooError(f"input_shape={tuple(input_shape)!r} is invalid; a gate takes (2,)")
    inputs = keras.Input(shape=(2,), name="bits")
    x = inputs
    if hidden_units:
        x = layers.Dense(hidden_units, activation="tanh", name="hidden")(x)
    outputs = layers.Dense(1, activation="sigmoid", name="predictions")(x)
    return keras.Model(inputs, outputs, name="logic_gate")
