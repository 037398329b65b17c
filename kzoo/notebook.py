"""``kzoo.notebook``: the helpers the notebooks in ``notebooks/`` use, a public module beside
the top-level API: which settings to run, small stand-in image folders, pictures of images in
a grid, training curves, and the few lower-level pieces the notebooks show (the input
pipeline, reading one image, a confusion-matrix callback).

Small mode runs a notebook in seconds on data that needs no download (the bundled
``mnist_sample`` and image folders written by :func:`toy_image_folder`); full mode runs the
settings of the articles on the real data in ``$KZOO_DATA_DIR``. See :func:`small_mode`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kzoo.data.images import read_image
from kzoo.data.pipeline import make_pipeline
from kzoo.errors import KzooError
from kzoo.training.callbacks import ConfusionMatrixPrinter

__all__ = [
    "ConfusionMatrixPrinter", "make_pipeline", "plot_history", "read_image", "show_images",
    "small_mode", "stand_in_weights", "toy_image_folder",
]

SMALL_SWITCH = "KZOO_NOTEBOOK_SMALL"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def small_mode() -> bool:
    """Whether a notebook should run its small settings: ``$KZOO_NOTEBOOK_SMALL`` if set
    (``1`` or ``0``), else small unless ``$KZOO_DATA_DIR`` names a folder of real data.

    >>> SMALL = small_mode()   # KZOO_DATA_DIR=~/data jupyter lab  ->  False
    """
    value = os.environ.get(SMALL_SWITCH, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    if value:
        raise KzooError(f"{SMALL_SWITCH}={value!r} is invalid; expected 1 (small settings) or 0 "
                        "(full settings, on the data in KZOO_DATA_DIR)")
    return not os.environ.get("KZOO_DATA_DIR")


def toy_image_folder(
    root: str | os.PathLike,
    classes: Sequence[str],
    splits: Mapping[str, int] | None = None,
    size: tuple[int, int] = (32, 32),
    seed: int = 0,
) -> Path:
    """Write a small class-per-folder image tree, ``root/SPLIT/CLASS/NNNN.png``, and return
    ``root``: a stand-in for a real folder (CIFAR-10, ants/bees) that loads like one.

    ``splits`` maps split folder names to images per class (default ``{"train": 20, "val":
    5}``). Each class is a blob of its own colour, of random place and size, on a noisy
    background tinted with that colour: easy enough to learn in an epoch or two.
    """
    from PIL import Image

    root = Path(root)
    splits = dict(splits or {"train": 20, "val": 5})
    rng = np.random.default_rng(seed)
    height, width = size
    rows, columns = np.mgrid[0:height, 0:width]
    for split, count in splits.items():
        for index, name in enumerate(classes):
            folder = root / split / str(name)
            folder.mkdir(parents=True, exist_ok=True)
            hue = index / max(len(classes), 1)
            colour = 255 * np.clip(np.abs((hue * 6 + np.array([0, 4, 2])) % 6 - 3) - 1, 0, 1)
            for number in range(count):
                pixels = rng.integers(0, 90, (height, width, 3)) + 0.2 * colour  # a tinted background
                centre = rng.uniform(0.3, 0.7, 2) * (height, width)
                radius = rng.uniform(0.2, 0.35) * min(height, width)
                blob = (rows - centre[0]) ** 2 + (columns - centre[1]) ** 2 < radius ** 2
                pixels[blob] = 0.35 * pixels[blob] + 0.65 * colour
                Image.fromarray(pixels.astype("uint8")).save(folder / f"{number:04d}.png")
    return root


def show_images(
    images: Sequence[np.ndarray],
    titles: Sequence[str] | None = None,
    columns: int = 8,
    size: float = 1.4,
):
    """Show images (0-255 pixels, ``HxW``, ``HxWx1`` or ``HxWx3``) in a grid, with optional
    titles, in the current notebook cell (``plt.gcf()`` is the figure).
    """
    import matplotlib.pyplot as plt

    images = [np.asarray(image) for image in images]
    columns = max(1, min(columns, len(images)))
    rows = max(1, math.ceil(len(images) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(columns * size, rows * size * 1.2),
                                squeeze=False)
    for index, axis in enumerate(axes.flat):
        axis.axis("off")
        if index >= len(images):
            continue
        image = images[index]
        if image.ndim == 3 and image.shape[-1] == 1:
            image = image[..., 0]
        axis.imshow(np.clip(image, 0, 255).astype("uint8"), cmap="gray" if image.ndim == 2 else None,
                    vmin=0, vmax=255)
        if titles is not None:
            axis.set_title(str(titles[index]), fontsize=8)
    figure.tight_layout()


def plot_history(history: Any, metrics: Sequence[str] = ("loss", "accuracy"), title: str = "") -> None:
    """Plot a Keras ``History`` (or its ``.history`` dict, or kzoo's ``TrainResult.history``)
    per epoch, one panel a metric, training and validation curves together.
    """
    import matplotlib.pyplot as plt

    logs = getattr(history, "history", history)
    shown = [metric for metric in metrics if metric in logs]
    figure, axes = plt.subplots(1, len(shown), figsize=(4.5 * len(shown), 3.2), squeeze=False)
    for axis, metric in zip(axes[0], shown):
        epochs = range(1, len(logs[metric]) + 1)
        axis.plot(epochs, logs[metric], marker=".", label="training")
        if f"val_{metric}" in logs:
            axis.plot(epochs, logs[f"val_{metric}"], marker=".", label="validation")
        axis.set_xlabel("epoch")
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
        axis.legend()
    if title:
        figure.suptitle(title)
    figure.tight_layout()


def stand_in_weights(
    name: str,
    folder: str | os.PathLike,
    path: str | os.PathLike,
    input_shape: tuple[int, int, int] = (224, 224, 3),
    seed: int = 0,
    **options: Any,
) -> Path:
    """Save stand-in weights for the backbone of the pretrained model ``name`` where real ones
    cannot be had (small settings, no network), and return ``path`` (``*.weights.h5``), to pass
    as ``weights=``.

    The weights are random, but every BatchNorm layer's statistics are measured on the images
    in ``folder``: with the untouched statistics of a random backbone its features vanish (about
    1e-11 for MobileNetV2), so nothing could train on them. They let a fine-tuning run work end
    to end; they know nothing of ImageNet, and what is fine-tuned on them learns little.
    ``options`` go to :func:`kzoo.build` (``alpha=0.35``); ``seed`` picks the random weights.
    """
    import keras

    from kzoo.data.images import list_image_files, read_images
    from kzoo.models.parts import classifier_parts
    from kzoo.models.registry import build

    files, _ = list_image_files(folder)
    if not files:
        raise KzooError(f"no images in {str(folder)!r} to measure BatchNorm statistics on")
    images, _, _ = read_images(files, size=tuple(input_shape[:2]), channels=input_shape[2])
    keras.utils.set_random_seed(seed)
    model = build(name, weights=None, input_shape=tuple(input_shape), **options)
    parts = classifier_parts(model)
    backbone = parts.backbone
    x = keras.ops.convert_to_tensor(images.astype("float32"))
    for layer in parts.preprocessing():
        x = layer(x)
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0  # the statistics of this one batch replace the initial ones
    backbone(x, training=True)
    path = Path(path)
    backbone.save_weights(str(path))
    return path
