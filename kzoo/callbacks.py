"""Keras callbacks for watching a model learn.

:class:`ConfusionMatrixPrinter` prints the confusion matrix after every epoch, as the Torch demo
(``train-on-mnist.lua`` and its ``optim.ConfusionMatrix``) does while it trains.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kzoo.evaluation import confusion_matrix, format_confusion_matrix, predict_labels


def _batched(data: Any, batch_size: int) -> tf.data.Dataset:
    """``data`` as a batched ``(images, labels)`` dataset: a dataset (batched or not: one
    whose elements have a first dimension of unknown size is taken as batched) or two arrays."""
    if isinstance(data, tf.data.Dataset):
        first = data.element_spec[0].shape
        return data if first.rank and first[0] is None else data.batch(batch_size)
    images, labels = data
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size)


class ConfusionMatrixPrinter(keras.callbacks.Callback):
    """After every ``every`` epochs, print the model's accuracy and confusion matrix on ``data``
    (rows: true class, columns: predicted class) and keep the matrix in ``matrices``.

    ``data`` is a ``tf.data`` dataset of ``(image, label)`` pairs, batched or not (the splits
    of :func:`kzoo.load_dataset` as they are), or a pair of arrays ``(images, labels)``.

    >>> splits = kzoo.load_dataset("mnist_sample")
    >>> printer = ConfusionMatrixPrinter(splits.validation, splits.class_names)
    >>> model.fit(splits.train.batch(64), epochs=3, callbacks=[printer])
    """

    def __init__(
        self,
        data: Any,
        class_names: Sequence[str],
        every: int = 1,
        batch_size: int = 256,
        name: str = "validation",
    ):
        super().__init__()
        self.data = _batched(data, batch_size)
        self.class_names = [str(name) for name in class_names]
        self.every = max(1, int(every))
        self.name = name
        self.matrices: list[np.ndarray] = []

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if (epoch + 1) % self.every:
            return
        truth, predicted = predict_labels(self.model, self.data)
        matrix = confusion_matrix(truth, predicted, max(len(self.class_names), 2))
        self.matrices.append(matrix)
        accuracy = float(np.trace(matrix) / max(matrix.sum(), 1))
        print(f"epoch {epoch + 1}: {self.name} accuracy {accuracy:.4f} "
              f"({int(np.trace(matrix))} of {int(matrix.sum())} right)")
        print(format_confusion_matrix(matrix, self.class_names), flush=True)
