"""Grad-CAM: where in an image a classifier looked for a class (Selvaraju et al., 2017).

The gradient of the class's score (its logit, before the softmax) with respect to the model's
last feature map (the last tensor that still has rows and columns: the backbone's output in a
pretrained model, the last convolution block's in LeNet-5 or a CIFAR net) gives each channel a
weight, the gradient's mean over the map. The weighted sum of the channels, kept where it is
positive and scaled to [0, 1], is the heatmap, resized to the image.

>>> heatmaps, probabilities = grad_cam(model, images)   # (n, height, width) in [0, 1]
>>> explain("runs/ants_bees", ["bee.jpg"])              # one PNG per image, paths returned
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from kzoo.errors import KzooError


def feature_map(model: keras.Model):
    """The model's last feature map: the last input of one of its layers that has rows and
    columns (rank 4, more than one pixel a side) and comes after a convolution or a nested
    backbone: what its pooling or flattening layer takes. Taken as a layer's input, it is the
    tensor of this model's graph, also where a nested backbone makes it."""
    learned = False
    found = None
    for layer in model.layers:
        try:
            tensor = layer.input
        except (AttributeError, ValueError):  # an input layer, or a layer used twice
            tensor = None
        shape = getattr(tensor, "shape", ())
        if learned and len(shape) == 4 and (shape[1] or 0) > 1 and (shape[2] or 0) > 1:
            found = tensor
        kernel = getattr(layer, "kernel", None)
        if isinstance(layer, keras.Model) or (kernel is not None and len(kernel.shape) == 4):
            learned = True
    if found is None:
        raise KzooError(f"model {model.name!r} has no convolutional feature map to explain; "
                        "Grad-CAM needs a convolutional model (not an MLP or a linear model)")
    return found


def _logits(model: keras.Model) -> tuple[keras.layers.Layer, Callable | None]:
    """The layer that gives the class probabilities, and how its input becomes the logits
    (``None``: no softmax found, its output is the score)."""
    for layer in reversed(model.layers):
        if isinstance(layer, keras.layers.Identity):  # ClassifierInfo and the like
            continue
        if isinstance(layer, keras.layers.Softmax):
            return layer, lambda x: x
        activation = getattr(getattr(layer, "activation", None), "__name__", "")
        if activation == "softmax" and isinstance(layer, keras.layers.Activation):
            return layer, lambda x: x
        if activation == "softmax" and isinstance(layer, keras.layers.Dense):
            def dense_logits(x, layer=layer):
                logits = keras.ops.matmul(x, keras.ops.cast(layer.kernel, "float32"))
                return logits + layer.bias if layer.use_bias else logits
            return layer, dense_logits
        return layer, None
    raise KzooError(f"model {model.name!r} has no layers")


def grad_cam(model: keras.Model, images: np.ndarray,
             classes: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Heatmaps ``(n, height, width)`` in [0, 1] of ``images`` (as the model takes them) for
    ``classes`` (default: each image's most probable), and the model's probabilities."""
    if keras.backend.backend() != "tensorflow":
        raise KzooError("Grad-CAM takes gradients with TensorFlow; run it with "
                        f"KERAS_BACKEND=tensorflow (the default), not {keras.backend.backend()}")
    import tensorflow as tf

    scored, to_logits = _logits(model)
    outputs = [feature_map(model), scored.input if to_logits else model.output, model.output]
    parts = keras.Model(model.inputs, outputs)
    images = tf.convert_to_tensor(np.asarray(images, dtype="float32"))
    with tf.GradientTape() as tape:
        maps, before, probabilities = parts(images, training=False)
        logits = to_logits(tf.cast(before, tf.float32)) if to_logits else before
        chosen = (tf.argmax(probabilities, axis=-1, output_type=tf.int32) if classes is None
                  else tf.constant(np.asarray(classes), tf.int32))
        score = tf.gather(tf.cast(logits, tf.float32), chosen, batch_dims=1)
    gradients = tf.cast(tape.gradient(score, maps), tf.float32)
    maps = tf.cast(maps, tf.float32)
    weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
    cams = tf.nn.relu(tf.reduce_sum(weights * maps, axis=-1, keepdims=True))
    cams = tf.image.resize(cams, images.shape[1:3], method="bilinear")[..., 0]
    peak = tf.reduce_max(cams, axis=(1, 2), keepdims=True)
    cams = tf.math.divide_no_nan(cams, peak)
    return cams.numpy(), np.asarray(probabilities, dtype="float32")


def overlay(image: np.ndarray, heatmap: np.ndarray, strength: float = 0.45) -> np.ndarray:
    """``image`` (uint8, grey or RGB) with ``heatmap`` laid over it in the jet colours."""
    from matplotlib import colormaps

    rgb = image if image.shape[-1] == 3 else np.repeat(image[..., :1], 3, axis=-1)
    colours = colormaps["jet"](heatmap)[..., :3] * 255
    return np.clip((1 - strength) * rgb + strength * colours, 0, 255).astype("uint8")


def save_explanation(path: Path, image: np.ndarray, heatmap: np.ndarray,
                     top: Sequence[tuple[str, float]], target: str, title: str = "") -> Path:
    """One PNG: the image (``title`` above it), the heatmap for class ``target`` over it, and
    the top classes with their probabilities."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 3.6), dpi=100, layout="constrained")
    left, right = figure.subplots(1, 2)
    left.imshow(image if image.shape[-1] == 3 else image[..., 0], cmap="gray")
    left.set_title(title if len(title) <= 44 else "..." + title[-41:], fontsize=9)
    right.imshow(overlay(image, heatmap))
    right.set_title(f"Grad-CAM for {target}; " + ", ".join(f"{name} {p:.2f}" for name, p in top),
                    fontsize=9)
    for axis in (left, right):
        axis.set_axis_off()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def explain(source: str | os.PathLike | keras.Model, inputs: Any,
            output: str | os.PathLike | None = None, top_k: int = 3,
            class_name: str | None = None) -> list[tuple[str, Path | None, str | None]]:
    """Grad-CAM PNGs of ``inputs`` (image files or folders, NumPy arrays or PIL images, as
    :func:`kzoo.predict` takes them) for a run's model, written into ``output`` (default
    ``RUN/explain/``) as ``NAME.gradcam.png``: for ``class_name``, else for each image's most
    probable class. Returns (image, PNG or ``None``, error) per image."""
    from kzoo.analysis.inference import image_framing, image_inputs, load_run, read_inputs

    entries = image_inputs(inputs)
    model, names = load_run(source)
    if class_name is not None and class_name not in names:
        raise KzooError(f"--class {class_name!r} is not one of the model's classes: "
                        f"{', '.join(names)}")
    if output is None:
        if isinstance(source, keras.Model):
            raise KzooError("pass output=FOLDER: a model object has no run directory")
        run = Path(source)
        output = (run if run.is_dir() else run.parent) / "explain"
    output = Path(output)
    results: list[tuple[str, Path | None, str | None]] = []
    taken: set[Path] = set()
    # a few images at a time: memory stays small
    for part, images, outcome in read_inputs(entries, image_framing(model), 16):
        if len(images):
            wanted = None if class_name is None else [names.index(class_name)] * len(images)
            heatmaps, probabilities = grad_cam(model, images, wanted)
        for entry, row in zip(part, outcome):
            if isinstance(row, str):
                results.append((entry.name, None, row))
                continue
            order = np.argsort(-probabilities[row], kind="stable")[:min(top_k, len(names))]
            path = Path(entry.name)
            target = output / _unused_name(path, taken, output)
            save_explanation(target, images[row], heatmaps[row],
                             [(names[i], float(probabilities[row][i])) for i in order],
                             class_name or names[int(order[0])], title=path.name)
            taken.add(target)
            results.append((entry.name, target, None))
    return results


def _unused_name(path: Path, taken: set[Path], output: Path) -> str:
    """``STEM.gradcam.png``, or with the parent folder's name (then a number) where two images
    share a stem."""
    for name in (path.stem, f"{path.parent.name}_{path.stem}"):
        if output / f"{name}.gradcam.png" not in taken:
            return f"{name}.gradcam.png"
    number = 2
    while output / f"{path.stem}-{number}.gradcam.png" in taken:
        number += 1
    return f"{path.stem}-{number}.gradcam.png"
