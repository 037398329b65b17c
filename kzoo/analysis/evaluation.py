"""Evaluation: a run's final figures on its held-out splits, the confusion matrix and per-class
metrics, and how to print and save them."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

from kzoo.analysis.tta import predict_with_tta, scores
from kzoo.data.pipeline import Examples, make_pipeline
from kzoo.files import write_csv

if TYPE_CHECKING:
    import keras

    from kzoo.data.datasets import Splits


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


def per_class_metrics(matrix: np.ndarray, class_names: list[str]) -> list[dict]:
    """Precision, recall, F1 and support of each class, from a confusion matrix.

    A class never predicted has precision 0; one never present has recall 0 (and support 0).
    """
    matrix = np.asarray(matrix)
    rows = []
    for index, name in enumerate(class_names):
        hits = int(matrix[index, index])
        predicted, actual = int(matrix[:, index].sum()), int(matrix[index].sum())
        precision = hits / predicted if predicted else 0.0
        recall = hits / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append({"class": str(name), "precision": precision, "recall": recall, "f1": f1,
                     "support": actual})
    return rows


def classification_metrics(truth, probabilities, class_names: list[str]) -> dict:
    """Accuracy, mean loss (cross-entropy), confusion matrix and per-class metrics of
    predicted class ``probabilities`` (n, classes) against true class indices ``truth``.
    """
    truth = np.asarray(truth).reshape(-1).astype("int64")
    probabilities = np.asarray(probabilities, dtype="float64")
    predicted = probabilities.argmax(axis=-1)
    losses = -np.log(np.clip(probabilities[np.arange(len(truth)), truth], 1e-12, 1.0))
    matrix = confusion_matrix(truth, predicted, len(class_names))
    return {
        "accuracy": float((predicted == truth).mean()) if len(truth) else 0.0,
        "loss": float(losses.mean()) if len(truth) else 0.0,
        "examples": len(truth),
        "class_names": [str(name) for name in class_names],
        "confusion_matrix": matrix.tolist(),
        "per_class": per_class_metrics(matrix, class_names),
    }


def format_per_class(rows: list[dict]) -> str:
    """A plain-text table of :func:`per_class_metrics`."""
    width = max([len(row["class"]) for row in rows] + [5])
    lines = [f"{'class':{width}}  precision  recall     f1  support"]
    for row in rows:
        lines.append(f"{row['class']:{width}}  {row['precision']:9.3f}  {row['recall']:6.3f}  "
                     f"{row['f1']:5.3f}  {row['support']:7d}")
    return "\n".join(lines)


def evaluate_splits(
    model: keras.Model, splits: Splits, batch_size: int, tta: str = "none",
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The one final evaluation of every kind of run: validation and test metrics of ``model``
    (each split the run holds out), and the predicted probabilities they come from (averaged
    over the test-time views of ``tta``), streamed a batch at a time. Without a test split no
    test figure is reported: ``test_split`` says ``"validation"``. With ``tta``, the accuracies
    without it are reported too. ``confusion_matrix`` is that of ``test_split``."""
    metrics: dict[str, Any] = {}
    probabilities: dict[str, np.ndarray] = {}
    class_names = splits.class_names
    for key in ("validation", "test"):
        if key not in splits.examples:
            continue
        part = splits.examples[key]
        batches = make_pipeline(part, batch_size)
        probabilities[key] = predict_with_tta(model, batches, tta)[0]
        metrics[key] = classification_metrics(part.labels, probabilities[key], class_names)
        if tta != "none":
            short = "val" if key == "validation" else key
            metrics[f"{short}_accuracy_without_tta"] = scores(*predict_with_tta(model, batches))[1]
    metrics.update(test_split=splits.test_split, class_names=class_names, tta=tta)
    for key, short in (("validation", "val"), ("test", "test")):
        if key in metrics:
            metrics.update({f"{short}_accuracy": metrics[key]["accuracy"],
                            f"{short}_loss": metrics[key]["loss"],
                            f"{short}_examples": len(splits.examples[key])})
    metrics["confusion_matrix"] = metrics[splits.test_split]["confusion_matrix"]
    return metrics, probabilities


def write_predictions(part: Examples, probabilities: np.ndarray, class_names: list[str],
                      path: Path) -> None:
    """One row per image, sorted by file: file, true class, predicted class, its probability,
    the loss."""
    rows = sorted(zip(part.paths, part.labels, probabilities), key=lambda row: row[0])

    def lines():
        for file, label, row in rows:
            best = int(row.argmax())
            loss = -math.log(max(float(row[label]), 1e-12))
            yield [file, class_names[label], class_names[best], f"{row[best]:.6f}", f"{loss:.6f}"]

    write_csv(path, ["path", "true", "predicted", "probability", "loss"], lines())
