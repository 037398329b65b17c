"""Export a run's model as ``keras``, ``saved_model``, ``tflite`` or ``onnx``, checked against
the original: the exported model runs on a few inputs and must give the same probabilities.

A model that computes in float16 or bfloat16 (``precision: mixed_bfloat16``) is exported to
TFLite and ONNX as a float32 copy (the same layers and weights, computing in float32): those
runtimes have no bfloat16 kernels (TFLite would need Flex ops, ONNX gets mixed types). The copy
is checked against the original too, within what the original's precision allows.

>>> kzoo.export("runs/finetune-ants", format="tflite")              # RUN/export/model.tflite
>>> kzoo.export("runs/finetune-ants", format="onnx", output="out/")  # out/model.onnx
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np

from kzoo.analysis.inference import image_framing, load_run, model_path
from kzoo.errors import KzooError
from kzoo.models.registry import load_model
from kzoo.models.saving import save_model

EXPORT_FORMATS = ("keras", "saved_model", "tflite", "onnx")
_EXPORT_NAMES = {"keras": "model.keras", "saved_model": "saved_model", "tflite": "model.tflite",
                 "onnx": "model.onnx"}
_FLOAT32_ONLY = ("tflite", "onnx")  # runtimes without bfloat16 (and mixed-type) kernels
_LOW_PRECISION = ("float16", "bfloat16", "mixed_float16", "mixed_bfloat16")
# How far a float32 copy's probabilities may drift from an original computing in this dtype:
# bfloat16 keeps 8 significant bits (about 2 decimal digits), float16 11.
_DRIFT = {"bfloat16": 5e-2, "float16": 1e-2}


# --- where the export goes ------------------------------------------------------------------------


def export_path(output: str | os.PathLike | None, format: str, default_folder: Path | None) -> Path:
    """The path to write a ``format`` export: ``output`` itself, or the format's file name
    (``model.tflite``, ...) inside ``output`` where it is a folder: an existing folder (not a
    SavedModel to replace), a path ending in a slash, or one with no suffix (a SavedModel,
    itself a folder, takes a new path without a suffix as its own name)."""
    name = _EXPORT_NAMES[format]
    if output is None:
        if default_folder is None:
            raise KzooError("pass output= when exporting a model object")
        return default_folder / name
    text = os.fspath(output)
    path = Path(text).expanduser()
    slash = text.endswith(("/", os.sep))
    if format == "saved_model":
        existing_export = path.is_dir() and (path / "saved_model.pb").is_file()
        inside = slash or (path.is_dir() and not existing_export)
        return path / name if inside else path
    if slash or path.is_dir() or (not path.suffix and not path.exists()):
        return path / name
    suffix = Path(name).suffix
    if path.suffix != suffix:
        raise KzooError(f"output {text!r} is not a {suffix} file; a {format} export is a "
                        f"{suffix} file: pass a path ending in {suffix}, or a folder (ending in /) "
                        f"to write {name} into")
    return path


def _prepare(output: Path, format: str) -> None:
    """The export's folder made, and an earlier export at ``output`` removed."""
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise KzooError(f"cannot create the folder {str(output.parent)!r} for the export "
                        f"({error.strerror or error}); pass another --output") from None
    if not output.exists():
        return
    if output.is_dir() and format == "saved_model" and (output / "saved_model.pb").is_file():
        shutil.rmtree(output)
    elif output.is_file() and format != "saved_model":
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


# --- a float32 copy ----------------------------------------------------------------------------------


def _as_float32(config: Any) -> Any:
    """A serialized model's config with every float16/bfloat16 dtype and policy made float32."""
    if isinstance(config, dict):
        if (config.get("class_name") in ("DTypePolicy", "FloatDTypePolicy")
                and config.get("config", {}).get("name") in _LOW_PRECISION):
            return {**config, "config": {**config["config"], "name": "float32"}}
        return {key: "float32" if key == "dtype" and isinstance(value, str)
                and value in _LOW_PRECISION else _as_float32(value)
                for key, value in config.items()}
    if isinstance(config, list):
        return [_as_float32(value) for value in config]
    return config


def float32_copy(model: keras.Model) -> keras.Model:
    """``model`` rebuilt to compute in float32 throughout, with its weights; ``model`` itself
    where it already does."""
    config = keras.saving.serialize_keras_object(model)
    plain = _as_float32(config)
    if plain == config:
        return model
    copy = keras.saving.deserialize_keras_object(plain)
    copy.set_weights(model.get_weights())  # cast to the copy's float32 variables
    return copy


def compute_dtype(model: keras.Model) -> str:
    """The lowest floating-point precision any of ``model``'s layers computes in."""
    dtypes = {getattr(getattr(layer, "dtype_policy", None), "compute_dtype", "float32")
              for layer in _all_layers(model)}
    return next((dtype for dtype in ("bfloat16", "float16") if dtype in dtypes), "float32")


def _all_layers(model: keras.Model) -> list[keras.layers.Layer]:
    layers = []
    for layer in model.layers:
        layers.append(layer)
        if isinstance(layer, keras.Model):
            layers += _all_layers(layer)
    return layers


# --- export ---------------------------------------------------------------------------------------


def export(
    source: str | os.PathLike | keras.Model,
    format: str = "keras",
    output: str | os.PathLike | None = None,
    verify: bool = True,
) -> Path:
    """Export a run's model as ``keras``, ``saved_model``, ``tflite`` or ``onnx`` (needs
    ``tf2onnx``) to ``output`` (a file, or a folder to write ``model.tflite`` and the like
    into; default ``RUN_DIR/export/``), with ``class_names.json`` beside it. A model computing
    in float16/bfloat16 goes to ``tflite`` and ``onnx`` as a float32 copy. With ``verify``, the
    exported model is run on a few inputs and must give the same probabilities as the original.
    Returns the exported path.
    """
    if format not in EXPORT_FORMATS:
        raise KzooError(f"export format {format!r} is unknown; expected one of "
                        f"{', '.join(EXPORT_FORMATS)}")
    _check_backend_exports(format)
    default = None if isinstance(source, keras.Model) else model_path(source).parent / "export"
    output = export_path(output, format, default)
    model, names = load_run(source)
    exported = float32_copy(model) if format in _FLOAT32_ONLY else model
    _prepare(output, format)
    try:
        _write(exported, output, format)
        beside = output if output.is_dir() else output.parent
        (beside / "class_names.json").write_text(json.dumps(names, indent=2))
    except OSError as error:
        raise KzooError(f"cannot write the {format} export to {str(output)!r} "
                        f"({error.strerror or error}); pass another --output") from None
    if verify:
        check_export(exported, output, format, original=None if exported is model else model)
    return output


def _write(model: keras.Model, output: Path, format: str) -> None:
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


# --- checking an export -------------------------------------------------------------------------------


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


def check_export(model: keras.Model, output: Path, format: str, tolerance: float = 1e-4,
                 original: keras.Model | None = None) -> float | None:
    """Run the export and ``model`` (the one exported) on the same pixels; an error if they
    disagree by more than ``tolerance``. Given the ``original`` a float32 copy was made of, the
    export must also agree with it, within what the original's precision allows. The largest
    probability difference from ``model``, or ``None`` where the format's runtime is missing.
    """
    predictor = exported_predictor(output, format)
    if predictor is None:
        print(f"kzoo: exported {output}; not verified ({format} runtime not installed)")
        return None
    framing = image_framing(model)
    pixels = np.random.default_rng(0).uniform(
        0, 255, (4, *framing["size"], framing["channels"])).astype("float32")
    actual = np.asarray(predictor(pixels), dtype="float32")
    difference = float(np.abs(actual - np.asarray(model.predict(pixels, verbose=0))).max())
    if difference > tolerance:
        raise KzooError(f"the {format} export at {str(output)!r} disagrees with the original "
                        f"model by up to {difference:.2g} in probability (> {tolerance})")
    note = f"probabilities within {difference:.1g}"
    if original is not None:
        dtype = compute_dtype(original)
        limit = _DRIFT.get(dtype, tolerance)
        expected = np.asarray(original.predict(pixels, verbose=0), dtype="float32")
        drift = float(np.abs(actual - expected).max())
        if drift > limit:
            raise KzooError(f"the float32 {format} export at {str(output)!r} disagrees with the "
                            f"original {dtype} model by up to {drift:.2g} in probability "
                            f"(> {limit})")
        note = (f"a float32 copy of the {dtype} model; probabilities within {difference:.1g} of "
                f"the copy's, {drift:.1g} of the original's")
    print(f"kzoo: exported {output} (verified: {note})")
    return difference
