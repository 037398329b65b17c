"""After fine-tuning: ``kzoo predict``, ``kzoo evaluate`` and ``kzoo export`` on a run made by
the ``kzoo finetune`` command, with unreadable files among the inputs."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
from messy_images import make_split_folder, write_messy_files, write_mobilenet_weights

import kzoo
from kzoo.analysis.export import check_export
from kzoo.analysis.inference import load_run
from kzoo.cli.main import main as kzoo_cli
from kzoo.data.images import read_image
from kzoo.errors import KzooError

pytestmark = pytest.mark.slow  # every test reads the run a `kzoo finetune` subprocess makes first
from kzoo.models.registry import load_model

ENV = {**os.environ, "KZOO_OFFLINE": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}


def _kzoo(*args):
    return subprocess.run([sys.executable, "-m", "kzoo", *map(str, args)], capture_output=True,
                          text=True, env=ENV, timeout=300, check=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = make_split_folder(tmp_path_factory.mktemp("ants_bees"), train=5, val=3)
    messy = tmp_path_factory.mktemp("inputs")
    write_messy_files(messy)
    return root, messy


@pytest.fixture(scope="module")
def finetuned(data, tmp_path_factory):
    """A run made by the CLI: ``kzoo finetune`` in a subprocess (head only, to stay quick:
    test_finetune.py covers the fine-tuning phase)."""
    root, _ = data
    run_dir = tmp_path_factory.mktemp("runs") / "run"
    weights = write_mobilenet_weights(tmp_path_factory.mktemp("weights") / "w.weights.h5", 48)
    done = _kzoo("finetune", root, "--backbone", "mobilenet_v2", "--option", "alpha=0.35",
                 "--weights", weights, "--image-size", 48, "--head-epochs", 2, "--unfreeze", 0,
                 "--batch-size", 8, "--run-dir", run_dir, "--quiet")
    return run_dir, done


@pytest.fixture(scope="module")
def original(finetuned, data):
    """The run's model, the validation images as it reads them, and its probabilities."""
    run_dir, _ = finetuned
    root, _ = data
    model = load_model(str(run_dir / "model.keras"))
    images = _pixels(model, sorted((root / "val").rglob("*.jpg")))
    return model, images, model.predict(images, verbose=0)


def _pixels(model, paths, center_crop=0.875):
    size = tuple(model.input_shape[1:3])
    return np.stack([read_image(p, size, center_crop=center_crop) for p in paths]).astype("float32")


def test_cli_finetune_made_a_run(finetuned):
    run_dir, done = finetuned
    assert done.returncode == 0, done.stderr[-2000:]
    assert "validation accuracy" in done.stdout and "cached backbone features" in done.stdout
    assert "fine-tuning the top" not in done.stdout  # --unfreeze 0: the head only
    assert (run_dir / "model.keras").is_file() and (run_dir / "report.html").is_file()


def test_predict_reports_unreadable_files_and_keeps_going(finetuned, data):
    run_dir, _ = finetuned
    root, messy = data
    image = root / "val" / "bees" / "00.jpg"
    results = kzoo.predict(run_dir, [image, messy, root / "missing.jpg"], top_k=2)
    assert results[0].path == str(image) and results[0].error is None
    assert [name for name, _ in results[0].top] in (["ants", "bees"], ["bees", "ants"])
    probabilities = [p for _, p in results[0].top]
    assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) == pytest.approx(1)
    by_name = {r.path.split("/")[-1]: r for r in results[1:]}
    assert by_name["truncated.jpg"].error.startswith("corrupt, truncated")
    assert by_name["empty.jpg"].error == "empty file (0 bytes)"
    assert by_name["notes.txt"].error == "not an image (.txt file)"
    assert by_name["missing.jpg"].error == "no such file or folder"
    assert by_name["cmyk.jpg"].error is None and by_name["exif_rotated.jpg"].error is None
    # The same framing as in training: the model's own center crop, read from the model.
    model, names = load_run(run_dir / "model.keras")
    expected = model.predict(_pixels(model, [image]), verbose=0)[0]
    assert dict(results[0].top)[names[int(expected.argmax())]] == pytest.approx(expected.max(), abs=1e-5)


def test_cli_predict_formats(finetuned, data, capsys):
    run_dir, _ = finetuned
    root, messy = data
    done = _kzoo("predict", run_dir, root / "val" / "ants" / "00.jpg", messy / "empty.jpg",
                 "--format", "json", "--top-k", 1)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(done.stdout)
    assert len(rows) == 2 and len(rows[0]["predictions"]) == 1 and rows[1]["error"]
    assert "1 of 2 files could not be read" in done.stderr

    assert kzoo_cli(["predict", str(run_dir), str(root / "val" / "ants"), "--format", "csv"]) == 0
    table = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert table[0] == ["path", "class_1", "probability_1", "class_2", "probability_2",
                        "class_3", "probability_3", "error"]
    assert len(table) == 4 and all(row[1] in ("ants", "bees") and row[5] == "" for row in table[1:])
    # A file named on the command line is tried whatever its extension; when it was the only
    # one, the command fails.
    assert kzoo_cli(["predict", str(run_dir), str(messy / "notes.txt")]) == 2
    assert "notes.txt': not an image Pillow can read" in capsys.readouterr().err


def test_evaluate_on_a_labelled_folder(finetuned, data, capsys):
    run_dir, _ = finetuned
    root, _ = data
    metrics = kzoo.evaluate(run_dir, root / "val")
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(saved["val_accuracy"])  # same images, same framing
    assert metrics["confusion_matrix"] == saved["validation"]["confusion_matrix"]
    assert [row["support"] for row in metrics["per_class"]] == [3, 3]
    assert kzoo_cli(["evaluate", str(run_dir), str(root / "val")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("accuracy ") and "precision" in out and "confusion matrix" in out
    with pytest.raises(KzooError, match="evaluate .*val' instead"):
        kzoo.evaluate(run_dir, root)


def test_evaluate_accepts_a_folder_with_some_classes_only(finetuned, data, tmp_path):
    run_dir, _ = finetuned
    root, _ = data
    shutil.copytree(root / "val" / "bees", tmp_path / "bees")
    metrics = kzoo.evaluate(run_dir, tmp_path)
    assert [row["support"] for row in metrics["per_class"]] == [0, 3]


EXPORTS = ["keras", "saved_model", "onnx"]


@pytest.mark.filterwarnings("ignore:In the future `np.object`:FutureWarning")  # Keras's tf2onnx shim
@pytest.mark.parametrize("format", EXPORTS)
def test_exported_model_predicts_the_same(finetuned, original, tmp_path, format):
    if format == "onnx" and not (importlib.util.find_spec("tf2onnx")
                                 and importlib.util.find_spec("onnxruntime")):
        pytest.skip("ONNX export needs tf2onnx and onnxruntime (pip install 'kzoo[onnx]')")
    run_dir, _ = finetuned
    output = tmp_path / {"keras": "m.keras", "saved_model": "sm", "onnx": "m.onnx"}[format]
    assert kzoo.export(run_dir, format=format, output=output, verify=False) == output
    assert json.loads((output if output.is_dir() else output.parent).joinpath(
        "class_names.json").read_text()) == ["ants", "bees"]
    _, images, expected = original
    if format == "keras":
        actual = load_model(str(output)).predict(images, verbose=0)
    elif format == "saved_model":
        import tensorflow as tf

        loaded = tf.saved_model.load(str(output))  # kept: its variables must outlive the call
        actual = loaded.serve(tf.constant(images)).numpy()
    else:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
        actual = session.run(None, {session.get_inputs()[0].name: images})[0]
    np.testing.assert_allclose(actual, expected, atol=1e-5)


def test_cli_export_tflite_predicts_the_same(finetuned, original):
    run_dir, _ = finetuned
    done = _kzoo("export", run_dir, "--format", "tflite")
    assert done.returncode == 0, done.stderr[-2000:]
    output = run_dir / "export" / "model.tflite"
    assert done.stdout.strip().endswith(str(output)) and "verified" in done.stdout
    import tensorflow as tf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's notice that LiteRT replaces it
        interpreter = tf.lite.Interpreter(model_path=str(output))
    _, images, expected = original
    source = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(source["index"], list(images.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(source["index"], images)
    interpreter.invoke()
    actual = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(actual, expected, atol=1e-4)


def test_export_check_catches_a_wrong_model(finetuned):
    run_dir, _ = finetuned
    saved = run_dir / "model.keras"
    model = load_model(str(saved))
    assert check_export(model, saved, "keras") == 0.0
    head = model.get_layer("predictions")
    head.bias.assign(np.array([5.0, -5.0], dtype="float32"))  # now it disagrees with the file
    with pytest.raises(KzooError, match="disagrees with the original"):
        check_export(model, saved, "keras")


def test_bad_inputs_are_clear_errors(finetuned, tmp_path):
    run_dir, _ = finetuned
    with pytest.raises(KzooError, match="holds no model.keras"):
        kzoo.predict(tmp_path, ["x.jpg"])
    with pytest.raises(KzooError, match="top_k=0 is invalid"):
        kzoo.predict(run_dir, ["x.jpg"], top_k=0)
    with pytest.raises(KzooError, match="export format 'pdf' is unknown"):
        kzoo.export(run_dir, format="pdf")
