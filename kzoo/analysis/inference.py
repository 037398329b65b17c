"""Use a trained classifier: ``predict`` images (files, folders, NumPy arrays, PIL images),
``evaluate`` on a labelled folder (``export`` is in :mod:`kzoo.analysis.export`). Each takes
a run directory (or a ``.keras`` file).

Images are read exactly as for training (:mod:`kzoo.data.images`), and the model holds its own
preprocessing, so predictions need nothing but the files; images in memory are framed for the
model as files are. An unreadable file is reported
with its reason, never fatal. Class names and the framing of images (``center_crop``) come
from the model itself (its ``ClassifierInfo`` layer), else from ``class_names.json`` next to
it (and whole images, squashed, as ``kzoo train`` reads them).

>>> for result in kzoo.predict("runs/finetune-ants", ["ant.jpg", "photos/"]):
...     print(result.path, result.top[0])
>>> kzoo.predict("runs/mnist", x_test[:8])      # a batch: named array[0] ... array[7]
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import keras
import numpy as np
from PIL import Image

from kzoo.analysis.evaluation import classification_metrics
from kzoo.analysis.tta import check_tta, predict_array, predict_with_tta
from kzoo.data.images import class_folders, frame_image, list_image_files, read_images
from kzoo.data.pipeline import Examples, make_pipeline
from kzoo.data.scan import scan_labelled
from kzoo.data.store import Framing
from kzoo.errors import KzooError
from kzoo.models.blocks import classifier_info
from kzoo.models.registry import load_model

# --- loading a run --------------------------------------------------------------------------------


def model_path(source: str | os.PathLike) -> Path:
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "model.keras").is_file():
            raise KzooError(
                f"{str(path)!r} holds no model.keras; pass the run directory of `kzoo finetune` "
                "(or `kzoo train`), or a .keras file"
            )
        return path / "model.keras"
    if path.is_file() and path.suffix == ".keras":
        return path
    raise KzooError(f"{str(path)!r} is neither a run directory nor a .keras file; pass the run "
                    "directory printed by `kzoo finetune`")


def load_run(source: str | os.PathLike | keras.Model) -> tuple[keras.Model, list[str]]:
    """The model of a run directory or ``.keras`` file (loaded with ``safe_mode=True``) and its
    class names. A model object passes through, with its class names.
    """
    if isinstance(source, keras.Model):
        model, names_file = source, None
    else:
        path = model_path(source)
        model, names_file = load_model(str(path)), path.parent / "class_names.json"
    info = classifier_info(model)
    names = info["class_names"] if info else None
    if names is None and names_file is not None and names_file.is_file():
        names = [str(name) for name in json.loads(names_file.read_text())]
    if names is None:
        names = [str(index) for index in range(model.output_shape[-1])]
    if len(names) != model.output_shape[-1]:
        raise KzooError(f"the model has {model.output_shape[-1]} outputs but {len(names)} class "
                        "names; class_names.json does not belong to this model")
    return model, names


def _input_size(model: keras.Model) -> tuple[tuple[int, int], int]:
    height, width, channels = model.input_shape[1:4]
    return (int(height), int(width)), int(channels)


def image_framing(model: keras.Model) -> dict[str, Any]:
    """How to read images for ``model``: size, channels, center crop (see kzoo.data.images)."""
    (height, width), channels = _input_size(model)
    info = classifier_info(model)
    return {"size": (height, width), "channels": channels,
            "center_crop": info["center_crop"] if info else None}


# --- predict -----------------------------------------------------------------------------------------


@dataclass
class Prediction:
    """The classes of one image, most probable first; or why the file could not be read."""

    path: str
    top: list[tuple[str, float]] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "error": self.error,
                "predictions": [{"class": name, "probability": p} for name, p in self.top]}


class ImageInput(NamedTuple):
    """One image to classify: a file (``image`` None) or pixels in memory (a NumPy array
    ``(height, width, channels)`` or a PIL image), named for the results; ``error`` where it
    cannot be used."""

    name: str
    image: Any = None
    error: str | None = None


_INPUTS = ("pass an image file or folder (a str or pathlib.Path), a list of them, a NumPy array "
           "(one image HxWxC or a batch NxHxWxC of pixel values 0-255), a PIL image, or a list "
           "mixing these")


def image_inputs(inputs: Any) -> list[ImageInput]:
    """The images in ``inputs``, in order: a path (a folder is searched recursively), a NumPy
    array of one image or a batch, a PIL image, or a list or tuple of these. A string is one
    path, never a sequence of characters."""
    if isinstance(inputs, (list, tuple)):
        items, names = list(inputs), [f"[{position}]" for position in range(len(inputs))]
    else:
        items, names = [inputs], [""]
    entries: list[ImageInput] = []
    for item, suffix in zip(items, names):
        if isinstance(item, (str, os.PathLike)):
            entries += _path_inputs(item)
        elif isinstance(item, np.ndarray):
            entries += _array_inputs(item, "array" + suffix)
        elif isinstance(item, Image.Image):
            entries.append(ImageInput("image" + suffix, item))
        else:
            kind = type(item).__qualname__
            if type(item).__module__ != "builtins":
                kind = f"{type(item).__module__}.{kind}"
            raise KzooError(f"inputs{suffix} is a {kind}, not images; {_INPUTS}")
    return entries


def _path_inputs(item: str | os.PathLike) -> list[ImageInput]:
    path = Path(item).expanduser()
    if path.is_dir():
        files, skipped = list_image_files(path)
        return [ImageInput(str(f)) for f in files] + [ImageInput(s.path, error=s.reason)
                                                      for s in skipped]
    if path.exists():
        return [ImageInput(str(path))]
    return [ImageInput(str(path), error="no such file or folder")]


def _array_inputs(array: np.ndarray, name: str) -> list[ImageInput]:
    shape = "x".join(map(str, array.shape))
    if array.dtype == bool or not (np.issubdtype(array.dtype, np.integer)
                                   or np.issubdtype(array.dtype, np.floating)):
        raise KzooError(f"{name} holds {array.dtype} values, not pixels; {_INPUTS}")
    single = array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (1, 3, 4))
    if not (single or (array.ndim == 4 and array.shape[-1] in (1, 3, 4))):
        raise KzooError(f"{name} has shape {shape}; expected one image HxWxC or a batch NxHxWxC "
                        "with C = 1, 3 or 4 channels (add the channel axis to grayscale images: "
                        "x[..., None])")
    if array.size == 0 and not (array.ndim == 4 and array.shape[0] == 0 and all(array.shape[1:])):
        raise KzooError(f"{name} has shape {shape}: an image with no pixels")
    if array.size:
        low, high = float(np.min(array)), float(np.max(array))
        if not (np.isfinite(low) and np.isfinite(high) and 0 <= low and high <= 255):
            raise KzooError(f"{name} holds values from {low:g} to {high:g}; expected pixel values "
                            "0-255 (scale images in 0-1 by 255)")
        if np.issubdtype(array.dtype, np.floating) and 0 < high <= 1:
            warnings.warn(f"{name} holds values from {low:g} to {high:g}: pixels scaled to 0-1? "
                          "kzoo reads pixel values 0-255, as in image files (multiply by 255)",
                          stacklevel=4)  # the caller of predict or explain
    if single:
        return [ImageInput(name, array if array.ndim == 3 else array[..., None])]
    return [ImageInput(f"{name}[{row}]", image) for row, image in enumerate(array)]


def _framed_pixels(image: Any, framing: dict[str, Any]) -> np.ndarray:
    """An in-memory image (a NumPy array or a Pillow image) framed for the model as a file's
    pixels are (:func:`kzoo.data.images.frame_image`)."""
    if isinstance(image, np.ndarray):
        pixels = image if image.dtype == np.uint8 else np.rint(image).astype(np.uint8)
        image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    return frame_image(image, tuple(framing["size"]), framing["channels"],
                       framing["center_crop"])


def read_inputs(entries: Sequence[ImageInput], framing: dict[str, Any], chunk: int
                ) -> Iterator[tuple[list[ImageInput], np.ndarray, list[int | str]]]:
    """``entries`` a ``chunk`` at a time (so memory stays small for any folder): the chunk,
    the pixels of those that could be read (uint8, framed for the model), and for each entry
    its row in those pixels or the reason it could not be read."""
    for start in range(0, len(entries), chunk):
        part = list(entries[start:start + chunk])
        files = [i for i, entry in enumerate(part) if entry.image is None and entry.error is None]
        decoded, kept, skipped = read_images([part[i].name for i in files], **framing)
        reasons = {skip.path: skip.reason for skip in skipped}
        from_files = {files[index]: decoded[row] for row, index in enumerate(kept)}
        pixels: list[np.ndarray] = []
        outcome: list[int | str] = []
        for i, entry in enumerate(part):
            image = from_files.get(i)
            if entry.error is None and entry.image is not None:
                try:
                    image = _framed_pixels(entry.image, framing)
                except (OSError, ValueError) as error:
                    outcome.append(f"cannot be framed for the model ({error})")
                    continue
            if image is None:
                outcome.append(entry.error or reasons.get(entry.name, "unreadable"))
            else:
                outcome.append(len(pixels))
                pixels.append(image)
        height, width = framing["size"]
        images = (np.stack(pixels) if pixels
                  else np.empty((0, height, width, framing["channels"]), dtype=np.uint8))
        yield part, images, outcome


def predict(
    source: str | os.PathLike | keras.Model,
    inputs: Any,
    top_k: int = 3,
    batch_size: int = 32,
    tta: str = "none",
) -> list[Prediction]:
    """The ``top_k`` classes and probabilities of each image in ``inputs``, in order, averaged
    over the test-time views of ``tta`` (see :mod:`kzoo.analysis.tta`). ``inputs``: an image
    file or a folder (searched recursively), a NumPy array (one image ``HxWxC`` or a batch
    ``NxHxWxC``, pixel values 0-255, framed to the model's input as files are), a PIL image, or
    a list of these. Unreadable files come back with ``error`` set; an array's images are named
    ``array[i]`` (``array[j][i]`` at ``inputs[j]``), a PIL image ``image`` (``image[j]``).
    """
    check_tta(tta)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise KzooError(f"top_k={top_k!r} is invalid; expected an integer >= 1")
    entries = image_inputs(inputs)
    model, names = load_run(source)
    framing = image_framing(model)
    k = min(top_k, len(names))
    results = []
    # decode a few batches at a time: memory stays small for any folder
    for part, images, outcome in read_inputs(entries, framing, 8 * batch_size):
        probabilities = (predict_array(model, images.astype("float32"), batch_size, tta)
                         if len(images) else [])
        for entry, row in zip(part, outcome):
            if isinstance(row, str):
                results.append(Prediction(entry.name, error=row))
            else:
                order = np.argsort(-probabilities[row], kind="stable")[:k]
                results.append(Prediction(entry.name, [(names[i], float(probabilities[row][i]))
                                                       for i in order]))
    return results


# --- evaluate ----------------------------------------------------------------------------------------


def evaluate(
    source: str | os.PathLike | keras.Model, folder: str | os.PathLike, batch_size: int = 32,
    tta: str = "none",
) -> dict[str, Any]:
    """Accuracy, loss, confusion matrix and per-class metrics of a run's model on a labelled
    folder (one sub-folder per class, named as the model's classes; some may be absent),
    streamed from the folder's image store a batch at a time; with ``tta``, on probabilities
    averaged over test-time views (see :mod:`kzoo.analysis.tta`).
    """
    check_tta(tta)
    model, names = load_run(source)
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise KzooError(f"folder {str(folder)!r} does not exist; pass a folder of class folders")
    present = class_folders(folder)
    unknown = [name for name in present if name not in names]
    if unknown or not present:
        layout = [n for n in ("val", "validation", "test") if n in present]
        hint = f" (evaluate {str(folder / layout[0])!r} instead?)" if layout else ""
        raise KzooError(
            f"folder {str(folder)!r} has class folder(s) {', '.join(unknown) or 'none'} the model "
            f"does not know; expected folders named after its classes: {', '.join(names)}{hint}"
        )
    part, skipped = scan_labelled(folder, names, Framing(**image_framing(model)), progress=False)
    examples = Examples.from_scan(part)
    truth = examples.labels.astype("int64")
    probabilities, _ = predict_with_tta(model, make_pipeline(examples, batch_size), tta)
    metrics = classification_metrics(truth, probabilities, names)
    metrics.update(folder=str(folder), tta=tta, skipped=[skip._asdict() for skip in skipped])
    return metrics
