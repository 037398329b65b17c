"""``kzoo export``: a model trained in bfloat16 exports to TFLite and ONNX as a checked float32
copy; ``--output`` takes a folder; a bad output path is one line, exit 2. On LeNet-5 runs."""

from __future__ import annotations

import importlib.util
import json
import warnings

import numpy as np
import pytest

import kzoo
from kzoo.cli.main import main as kzoo_cli
from kzoo.models.registry import load_model
from kzoo.models.saving import save_model

NAMES = ["a", "b", "c"]


def _save_run(folder, policy="float32"):
    import keras

    keras.utils.set_random_seed(0)
    keras.config.set_dtype_policy(policy)
    try:
        model = kzoo.build("lenet5", num_classes=3)
    finally:
        keras.config.set_dtype_policy("float32")
    head = model.get_layer("predictions")  # confident, as a trained model: probabilities vary
    head.kernel.assign(head.kernel * 8)
    folder.mkdir()
    save_model(model, folder / "model.keras", class_names=NAMES)
    return folder


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return _save_run(tmp_path_factory.mktemp("runs") / "float32")


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory):
    return _save_run(tmp_path_factory.mktemp("runs") / "bf16", "mixed_bfloat16")


def _pixels(count=6):
    return np.random.default_rng(2).uniform(0, 255, (count, 28, 28, 1)).astype("float32")


FLOAT32_FORMATS = ["tflite"] + (["onnx"] if importlib.util.find_spec("tf2onnx")
                                and importlib.util.find_spec("onnxruntime") else [])


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:In the future `np.object`:FutureWarning")  # Keras's tf2onnx shim
@pytest.mark.parametrize("format", FLOAT32_FORMATS)
def test_a_bfloat16_model_exports_as_a_checked_float32_copy(bf16_run, tmp_path, format, capsys):
    from kzoo.analysis.export import compute_dtype, exported_predictor

    original = load_model(str(bf16_run / "model.keras"))
    assert compute_dtype(original) == "bfloat16"
    output = kzoo.export(bf16_run, format=format, output=tmp_path)
    assert output == tmp_path / f"model.{format}"
    assert "verified: a float32 copy of the bfloat16 model" in capsys.readouterr().out
    assert json.loads((tmp_path / "class_names.json").read_text()) == NAMES
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exported = exported_predictor(output, format)(_pixels())
    expected = original.predict(_pixels(), verbose=0)
    np.testing.assert_allclose(exported, expected, atol=2e-2)  # bfloat16 keeps ~2 digits
    np.testing.assert_allclose(exported.sum(axis=1), 1, atol=1e-5)


def test_the_float32_copy_has_the_weights_and_the_check_holds_it_to_the_original(bf16_run,
                                                                                 tmp_path):
    from kzoo.analysis.export import check_export, compute_dtype, float32_copy

    original = load_model(str(bf16_run / "model.keras"))
    copy = float32_copy(original)
    assert compute_dtype(copy) == "float32" and float32_copy(copy) is copy
    assert {layer.dtype_policy.name for layer in copy.layers} == {"float32"}
    for mine, theirs in zip(copy.weights, original.weights):
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs))
    np.testing.assert_allclose(copy.predict(_pixels(), verbose=0),
                               original.predict(_pixels(), verbose=0), atol=2e-2)
    # A copy that lost weights disagrees with the original, and the check says so.
    head = copy.get_layer("predictions")
    head.set_weights([np.zeros_like(weight) for weight in head.get_weights()])
    output = tmp_path / "broken.keras"
    save_model(copy, output)
    with pytest.raises(kzoo.KzooError, match="disagrees with the original bfloat16 model"):
        check_export(copy, output, "keras", original=original)


@pytest.mark.slow
def test_cli_export_writes_into_a_folder(run, tmp_path, capsys):
    (tmp_path / "existing").mkdir()
    for given, written in [("existing", "existing/model.tflite"),
                           ("new/", "new/model.tflite"),
                           ("plain", "plain/model.tflite"),
                           ("named.tflite", "named.tflite")]:
        assert kzoo_cli(["export", str(run), "--format", "tflite", "--output",
                         str(tmp_path / given) + ("/" if given.endswith("/") else "")]) == 0
        assert capsys.readouterr().out.strip().endswith(str(tmp_path / written))
        assert (tmp_path / written).is_file()
        assert (tmp_path / written).parent.joinpath("class_names.json").is_file()
    assert kzoo_cli(["export", str(run), "--format", "keras", "--output", str(tmp_path)]) == 0
    assert (tmp_path / "model.keras").is_file()
    assert kzoo_cli(["export", str(run), "--format", "saved_model", "--output",
                     str(tmp_path / "existing")]) == 0
    assert (tmp_path / "existing" / "saved_model" / "saved_model.pb").is_file()


def test_cli_export_bad_output_paths_are_one_line(run, tmp_path, capsys):
    (tmp_path / "file.txt").write_text("x")
    for output, message in [
        (tmp_path / "m.onnx", "is not a .tflite file; a tflite export is a .tflite file"),
        (tmp_path / "file.txt" / "sub" / "m.tflite", "cannot create the folder"),
        (tmp_path / "file.txt", "is not a .tflite file"),
    ]:
        assert kzoo_cli(["export", str(run), "--format", "tflite", "--output", str(output)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("kzoo: error: ") and message in err, err
    assert kzoo_cli(["export", str(run), "--format", "saved_model", "--output",
                     str(tmp_path / "file.txt")]) == 2
    assert "exists and is not a saved_model export" in capsys.readouterr().err
