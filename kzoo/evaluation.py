"""Test-set evaluation: predictions, accuracy, the confusion matrix, and how to print it."""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def predict_labels(model, dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """True and predicted class indices over a batched ``(image, label)`` dataset."""
    truths, predictions = [], []
    for images, labels in dataset:
        probabilities = model(images, training=False)
        probabilities = np.asarray(probabilities)
        if probabilities.shape[-1] == 1:  # one sigmoid unit: a binary classifier
            predicted = (probabilities[:, 0] > 0.5).astype("int64")
        else:
            predicted = probabilities.argmax(axis=-1)
        truths.append(np.asarray(labels).reshape(-1).astype("int64"))
        predictions.append(predicted)
    return np.concatenate(truths), np.concatenate(predictions)


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """``matrix[i, j]`` counts examples of class ``i`` predicted as class ``j``."""
    flat = np.bincount(truth * num_classes + predicted, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def format_confusion_matrix(matrix: np.ndarray, class_names: list[str]) -> str:
    """A plain-text table: rows are true classes, columns predicted classes."""
    names = [str(name) for name in class_names]
    width = max(max(len(n) for n in names), len(str(matrix.max())), 4)
    header = " " * (width + 2) + " ".join(n[:width].rjust(width) for n in names)
    lines = ["confusion matrix (rows: true class, columns: predicted class)", header]
    for name, row in zip(names, matrix):
        lines.append(name[:width].rjust(width) + "  " + " ".join(str(v).rjust(width) for v in row))
    return "\n".join(lines)
