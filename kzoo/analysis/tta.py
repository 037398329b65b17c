"""Test-time augmentation: a classifier's probabilities averaged over flipped and shifted views
of each image.

``flip`` averages the image and its mirror image; ``flip+shift`` (airbench's TTA) gives that
pair half the weight and the pairs shifted diagonally by a few pixels either way (reflected at
the border; 1 pixel at 32 pixels, 7 at 224) a quarter each.

>>> probabilities, labels = predict_with_tta(model, test_batches, "flip+shift")
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from kzoo.errors import KzooError
from kzoo.recipes.recipe import TTA_MODES


def check_tta(mode: str) -> str:
    if mode not in TTA_MODES:
        raise KzooError(f"tta={mode!r} is unknown; expected one of {', '.join(TTA_MODES)}")
    return mode


def shift_pixels(side: int) -> int:
    """How far ``flip+shift`` moves an image of ``side`` pixels: 1/32 of it, at least 1."""
    return max(1, round(side / 32))


def tta_views(images: tf.Tensor, mode: str) -> list[tuple[float, tf.Tensor]]:
    """(weight, view) pairs for a batch of images (N, H, W, C); the weights sum to 1."""
    check_tta(mode)
    if mode == "none":
        return [(1.0, images)]
    mirrored = [(0.5, images), (0.5, tf.reverse(images, axis=[2]))]
    if mode == "flip":
        return mirrored
    height, width = images.shape[1], images.shape[2]
    step = shift_pixels(min(height, width))
    padded = tf.pad(images, [[0, 0], [step, step], [step, step], [0, 0]], mode="REFLECT")
    shifted = [padded[:, :height, :width], padded[:, 2 * step:, 2 * step:]]
    views = [(weight / 2, view) for weight, view in mirrored]
    for view in shifted:
        views += [(1 / 8, view), (1 / 8, tf.reverse(view, axis=[2]))]
    return views


def predict_batch(model, images, mode: str = "none") -> np.ndarray:
    """The model's output for one batch, averaged over the views of ``mode``."""
    images = tf.convert_to_tensor(images, tf.float32)
    return _two_columns(sum(weight * np.asarray(model.predict_on_batch(np.asarray(view)), "float64")
                            for weight, view in tta_views(images, mode)))


def _two_columns(probabilities: np.ndarray) -> np.ndarray:
    """A one-unit sigmoid output as the probabilities of classes 0 and 1."""
    if probabilities.ndim == 2 and probabilities.shape[1] == 1:
        return np.concatenate([1 - probabilities, probabilities], axis=1)
    return probabilities


def predict_with_tta(model, batches, mode: str = "none") -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and labels over a dataset of ``(images, labels)`` batches."""
    outputs, labels = [], []
    for images, targets in batches:
        outputs.append(predict_batch(model, images, mode))
        labels.append(np.asarray(targets).reshape(-1).astype(np.int64))
    return np.concatenate(outputs), np.concatenate(labels)


def scores(probabilities: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(cross-entropy loss, accuracy) of ``probabilities`` against integer ``labels``."""
    picked = probabilities[np.arange(len(labels)), labels.astype(np.int64)]
    loss = float(-np.mean(np.log(np.clip(picked, 1e-7, 1.0))))
    return loss, float(np.mean(probabilities.argmax(1) == labels))


def predict_array(model, images: np.ndarray, batch_size: int = 32, mode: str = "none") -> np.ndarray:
    """Probabilities for an array of images, ``batch_size`` at a time, averaged over the views
    of ``mode``."""
    if mode == "none":
        return np.asarray(model.predict(images, batch_size=batch_size, verbose=0))
    return np.concatenate([predict_batch(model, images[start:start + batch_size], mode)
                           for start in range(0, len(images), batch_size)])
