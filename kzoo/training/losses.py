"""Losses recipes name: Keras's own, and sparse cross-entropy with label smoothing (which Keras's
``SparseCategoricalCrossentropy`` lacks)."""

from __future__ import annotations

import keras

from kzoo.errors import KzooError


@keras.saving.register_keras_serializable(package="kzoo")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Cross-entropy of predicted probabilities against integer labels smoothed towards the
    uniform distribution: the true class gets ``1 - label_smoothing + label_smoothing / K``."""

    def __init__(self, label_smoothing: float = 0.1, name: str = "smoothed_sparse_crossentropy",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        ops = keras.ops
        labels = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        one_hot = ops.one_hot(labels, ops.shape(y_pred)[-1], dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(one_hot, y_pred,
                                                     label_smoothing=self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def make_loss(name: str, label_smoothing: float = 0.0):
    """The loss ``compile`` gets: ``name`` as it is, or with label smoothing where asked."""
    if not label_smoothing:
        return name
    if name != "sparse_categorical_crossentropy":
        raise KzooError(f"label_smoothing={label_smoothing} needs loss "
                        f"'sparse_categorical_crossentropy', not {name!r}")
    return SmoothedSparseCrossentropy(label_smoothing)
