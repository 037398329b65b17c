"""Use a trained classifier: ``predict`` image files, ``evaluate`` on a labelled folder,
``export`` to another format. Each takes a run directory (or a ``.keras`` file).

Images are read exactly as for training (:mod:`kzoo.data.images`), and the model holds its own
preprocessing, so predictions need nothing but the files. An unreadable file is reported
with its reason, never fatal. Class names and the framing of images (``center_crop``) come
from the model itself (its ``ClassifierInfo`` layer), else from ``class_names.json`` next to
it (and whole images, squashed, as ``kzoo train`` reads them).

>>> for result in kzoo.predict("runs/finetune-ants", ["ant.jpg", "photos/"]):
...     print(result.path, result.top[0])
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from kzoo.analysis.evaluation import classification_metrics
from kzoo.analysis.tta import check_tta, predict_array, predict_with_tta
from kzoo.data.images import class_folders, list_image_files, read_images
from kzoo.data.pipeline import Examples, make_pipeline
from kzoo.data.scan import scan_labelled
from kzoo.data.store import Framing
from kzoo.errors import KzooError
from kzoo.models.blocks import classifier_info
from kzoo.models.registry import load_model
from kzoo.models.saving import save_model

EXPORT_FORMATS = ("keras", "saved_model", "tflite", "onnx")
_EXPORT_NAMES = {"keras": "model.keras", "saved_model": "saved_model", "tflite": "model.tflite",
                 "onnx": "model.onnx"}


# --- loading a run --------------------------------------------------------------------------------


def _model_path(source: str | os.PathLike) -> Path:
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
        path = _model_path(source)
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


def image_paths(inputs: Sequence[str | os.PathLike]) -> list[tuple[str, str | None]]:
    """Files to classify, folders expanded (recursively); each with the reason it is skipped."""
    entries: list[tuple[str, str | None]] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            files, skipped = list_image_files(path)
            entries += [(str(f), None) for f in files] + [(s.path, s.reason) for s in skipped]
        elif path.exists():
            entries.append((str(path), None))
        else:
            entries.append((str(path), "no such file or folder"))
    return entries


def predict(
    source: str | os.PathLike | keras.Model,
    inputs: Sequence[str | os.PathLike],
    top_k: int = 3,
    batch_size: int = 32,
    tta: str = "none",
) -> list[Prediction]:
    """The ``top_k`` classes and probabilities of each image in ``inputs`` (files, or folders
    searched recursively), in order, averaged over the test-time views of ``tta`` (see
    :mod:`kzoo.analysis.tta`). Unreadable files come back with ``error`` set.
    """
    check_tta(tta)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise KzooError(f"top_k={top_k!r} is invalid; expected an integer >= 1")
    model, names = load_run(source)
    framing = image_framing(model)
    k = min(top_k, len(names))
    entries = image_paths(inputs)
    results = []
    chunk = 8 * batch_size  # decode a few batches at a time: memory stays small for any folder
    for start in range(0, len(entries), chunk):
        part = entries[start:start + chunk]
        readable = [path for path, reason in part if reason is None]
        images, kept, unreadable = read_images(readable, **framing)
        reasons = {skip.path: skip.reason for skip in unreadable}
        probabilities = (predict_array(model, images.astype("float32"), batch_size, tta)
                         if len(images) else [])
        rows = dict(zip((readable[i] for i in kept), probabilities))
        for path, reason in part:
            if path in rows:
                order = np.argsort(-rows[path], kind="stable")[:k]
                results.append(Prediction(path, [(names[i], float(rows[path][i])) for i in order]))
            else:
                results.append(Prediction(path, error=reason or reasons.get(path, "unreadable")))
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


# --- export --------------------------------------------------------------------------------------------


def _remove_old(output: Path, format: str) -> None:
    if not output.exists():
        return
    if output.is_dir() and format == "saved_model" and (output / "saved_model.pb").is_file():
        shutil.rmtree(output)
    elif output.is_file():
        output.unlink()
    else:
        raise KzooError(f"{str(output)!r} exists and is not a {format} export; pass another "
                        "--output or remove it")


def _check_backend_exports(format: str) -> None:
    """An error, before any work, where Keras cannot export ``format`` from the current backend.

    ``keras`` and ``saved_model`` export from any backend (JAX through jax2tf), LiteRT (tflite)
    from TensorFlow only, and ONNX from JAX only through the optional jax2onnx package.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow" or format in ("keras", "saved_model"):
        return
    if format == "onnx" and backend == "jax" and importlib.util.find_spec("jax2onnx"):
        return
    needs = "jax2onnx (pip install jax2onnx)" if format == "onnx" and backend == "jax" else None
    raise KzooError(
        f"{format} export is not supported on Keras's {backend!r} backend"
        + (f" without {needs}" if needs else "")
        + f"; export with KERAS_BACKEND=tensorflow (`KERAS_BACKEND=tensorflow kzoo export RUN_DIR "
        f"--format {format}`): a model.keras trained on any backend loads on TensorFlow"
    )


def export(
    source: str | os.PathLike | keras.Model,
    format: str = "keras",
    output: str | os.PathLike | None = None,
    verify: bool = True,
) -> Path:
    """Export a run's model as ``keras``, ``saved_model``, ``tflite`` or ``onnx`` (needs
    ``tf2onnx``) to ``output`` (default ``RUN_DIR/export/``), with ``class_names.json`` beside
    it. With ``verify``, the exported model is run on a few inputs and must give the same
    probabilities as the original. Returns the exported path.
    """
    if format not in EXPORT_FORMATS:
        raise KzooError(f"export format {format!r} is unknown; expected one of "
                        f"{', '.join(EXPORT_FORMATS)}")
    _check_backend_exports(format)
    model, names = load_run(source)
    if output is None:
        if isinstance(source, keras.Model):
            raise KzooError("pass output= when exporting a model object")
        output = _model_path(source).parent / "export" / _EXPORT_NAMES[format]
    output = Path(output).expanduser()
    output.parent.mkdir(parents=True, exist_ok=True)
    _remove_old(output, format)
    if format == "keras":
        save_model(model, output)
    elif format == "saved_model":
        model.export(str(output), format="tf_saved_model", verbose=False)
    elif format == "tflite":
        model.export(str(output), format="litert", verbose=False)
    else:
        try:
            import tf2onnx  # noqa: F401
        except ImportError:
            raise KzooError("ONNX export needs the tf2onnx converter: pip install tf2onnx "
                            "onnxruntime (or pip install 'kzoo[onnx]')") from None
        if not model.built or not getattr(model, "_called", True):
            model(np.zeros((1, *model.input_shape[1:]), dtype="float32"))  # a loaded model
        model.export(str(output), format="onnx", verbose=False)
    beside = output if output.is_dir() else output.parent
    (beside / "class_names.json").write_text(json.dumps(names, indent=2))
    if verify:
        check_export(model, output, format)
    return output


def exported_predictor(path: str | os.PathLike, format: str) -> Callable[[np.ndarray], np.ndarray] | None:
    """A function from a batch of float32 pixels to probabilities, running an exported model;
    ``None`` where the runtime for ``format`` is not installed.
    """
    path = str(path)
    if format == "keras":
        model = load_model(path)
        return lambda x: np.asarray(model.predict(x, verbose=0))
    if format == "saved_model":
        import tensorflow as tf

        loaded = tf.saved_model.load(path)
        return lambda x: loaded.serve(tf.constant(x)).numpy()
    if format == "tflite":
        return _tflite_predictor(path)
    try:
        import onnxruntime
    except ImportError:
        return None
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def _tflite_predictor(path: str) -> Callable[[np.ndarray], np.ndarray]:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        interpreter = Interpreter(model_path=path)
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]

    def run(x: np.ndarray) -> np.ndarray:
        interpreter.resize_tensor_input(source["index"], list(x.shape))
        interpreter.allocate_tensors()
        interpreter.set_tensor(source["index"], x.astype(source["dtype"]))
        interpreter.invoke()
        return interpreter.get_tensor(target["index"]).copy()

    return run


def check_export(model: keras.Model, output: Path, format: str, tolerance: float = 1e-4) -> float | None:
    """Run the export and the original on the same pixels; an error if they disagree. The
    largest probability difference, or ``None`` where the format's runtime is missing.
    """
    predictor = exported_predictor(output, format)
    if predictor is None:
        print(f"kzoo: exported {output}; not verified ({format} runtime not installed)")
        return None
    (height, width), channels = _input_size(model)
    pixels = np.random.default_rng(0).uniform(0, 255, (4, height, width, channels)).astype("float32")
    expected = np.asarray(model.predict(pixels, verbose=0))
    difference = float(np.abs(predictor(pixels) - expected).max())
    if difference > tolerance:
        raise KzooError(f"the {format} export at {str(output)!r} disagrees with the original "
                        f"model by up to {difference:.2g} in probability (> {tolerance})")
    print(f"kzoo: exported {output} (verified: probabilities within {difference:.1g})")
    return difference
