"""Precision, steps per execution, FLOP counts and test-time augmentation: the settings that make
training fast, checked for what they change and for what they must not."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml
from conftest import assert_clean_error, write_image_folder, write_mnist_npz

import kzoo
from kzoo.analysis.tta import predict_batch, shift_pixels, tta_views
from kzoo.errors import KzooError
from kzoo.recipes.zoo import load_recipe
from kzoo.training.flops import (
    MAX_STEPS_PER_EXECUTION,
    auto_steps_per_execution,
    dividing_steps,
    forward_flops,
)
from kzoo.training.precision import (
    auto_precision,
    cpu_flags,
    precision_policy,
    resolve_precision,
)

RECIPE = {
    "model": "lenet5",
    "dataset": "mnist",
    "optimizer": {"name": "adam", "learning_rate": 0.003},
    "batch_size": 32,
    "epochs": 2,
    "validation_split": 0.1,
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    write_mnist_npz(folder, train=300, test=100)
    return folder


def write_recipe(folder, **changes):
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump({**RECIPE, **changes}))
    return path


# --- precision ----------------------------------------------------------------------------------


def test_auto_precision_follows_the_hardware():
    assert auto_precision({"avx512f", "avx512_bf16"}, gpu=None) == "mixed_bfloat16"
    assert auto_precision({"amx_bf16"}, gpu=None) == "mixed_bfloat16"
    assert auto_precision({"avx2", "avx512f"}, gpu=None) == "float32"
    assert auto_precision({"avx512_bf16"}, gpu=(6, 1)) == "float32"  # the GPU computes, slowly


@pytest.mark.parametrize("capability, policy", [
    ((7, 0), "mixed_float16"), ((7, 5), "mixed_float16"),  # float16 tensor cores only
    ((8, 0), "mixed_bfloat16"), ("8.6", "mixed_bfloat16"), ((9, 0), "mixed_bfloat16"),
    ((6, 1), "float32"), ((0, 0), "float32"),
])
def test_auto_precision_prefers_bfloat16_on_gpus_that_have_it(capability, policy):
    assert auto_precision(set(), gpu=capability) == policy
    assert auto_precision({"avx512_bf16"}, gpu=capability) == policy  # the GPU decides


class FakeGpu:
    platform = "gpu"

    def __init__(self, capability):
        self.compute_capability = capability


def test_auto_precision_asks_the_active_backend_for_its_gpu(monkeypatch):
    """On JAX, jax.devices() is asked, never TensorFlow's GPU list; on TensorFlow, tf.config;
    on torch, torch.cuda."""
    import sys
    import types

    import jax

    def tensorflow_asked(*args, **kwargs):
        raise AssertionError("TensorFlow's device list was read on another backend")

    monkeypatch.setattr(tf.config, "list_physical_devices", tensorflow_asked)
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    monkeypatch.setattr(jax, "devices", lambda backend=None: (
        [FakeGpu("8.0")] if backend == "gpu" else []))
    assert auto_precision(set()) == "mixed_bfloat16"
    monkeypatch.setattr(jax, "devices", lambda backend=None: [FakeGpu("7.5")])
    assert auto_precision(set()) == "mixed_float16"

    def no_gpu(backend=None):
        raise RuntimeError("Unknown backend: 'gpu' requested, but no platforms that are "
                           "instances of gpu are present")

    monkeypatch.setattr(jax, "devices", no_gpu)
    assert auto_precision({"avx512_bf16"}) == "mixed_bfloat16"  # the CPU's, without a GPU
    assert auto_precision({"avx2"}) == "float32"

    cuda = types.SimpleNamespace(is_available=lambda: True,
                                 get_device_capability=lambda index: (8, 9))
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    monkeypatch.setattr(keras.backend, "backend", lambda: "torch")
    assert auto_precision(set()) == "mixed_bfloat16"

    monkeypatch.setattr(keras.backend, "backend", lambda: "tensorflow")
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: ["GPU:0"])
    monkeypatch.setattr(tf.config.experimental, "get_device_details",
                        lambda device: {"compute_capability": (7, 0)})
    assert auto_precision(set()) == "mixed_float16"


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx512_bf16\nbugs\t: none\n")
    assert cpu_flags(cpuinfo) == {"fpu", "sse", "avx512_bf16"}
    assert cpu_flags(tmp_path / "missing") == set()


def test_unknown_precision_is_refused_by_name():
    with pytest.raises(KzooError, match="'bfloat8'.*expected one of auto, float32"):
        resolve_precision("bfloat8")


def test_policy_is_restored_after_the_block():
    before = keras.config.dtype_policy().name
    with precision_policy("mixed_bfloat16") as name:
        assert name == keras.config.dtype_policy().name == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == before


def test_bf16_training_keeps_softmax_and_weights_float32(data_dir, tmp_path):
    result = kzoo.train(write_recipe(tmp_path, precision="mixed_bfloat16"), data_dir=data_dir,
                        run_dir=tmp_path / "run", verbose=0)
    assert result.metrics["precision"] == "mixed_bfloat16"
    model = kzoo.load_model(str(result.run_dir / "model.keras"))
    conv = model.get_layer("c1")
    assert conv.compute_dtype == "bfloat16" and conv.kernel.dtype == "float32"
    assert model.get_layer("predictions").compute_dtype == "float32"
    probabilities = model.predict(np.zeros((2, 28, 28, 1), "float32"), verbose=0)
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-5)
    assert result.metrics["test_accuracy"] > 0.5  # it learns in bf16 too
    assert keras.config.dtype_policy().name == "float32"  # nothing leaks to later builds


@pytest.mark.slow
def test_precision_flag_reaches_metrics(data_dir, tmp_path, cli):
    result = cli("train", write_recipe(tmp_path, epochs=1), "--precision", "float32",
                 "--data-dir", data_dir, "--run-dir", tmp_path / "run", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "in float32" in result.stdout
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["precision"] == "float32"


@pytest.mark.slow
def test_bad_precision_in_a_recipe_is_one_line(tmp_path, cli):
    result = cli("train", write_recipe(tmp_path, precision="half"))
    assert_clean_error(result, "'precision'", "'half'", "mixed_bfloat16")


# --- steps per execution ---------------------------------------------------------------------------


def test_tiny_steps_run_many_per_execution_and_big_ones_one():
    lenet = kzoo.build("lenet5")
    airbench = kzoo.build("airbench")
    assert 1 < auto_steps_per_execution(lenet, 128) <= MAX_STEPS_PER_EXECUTION
    assert auto_steps_per_execution(kzoo.build("softmax_regression"), 32) == MAX_STEPS_PER_EXECUTION
    assert auto_steps_per_execution(airbench, 1024) == 1
    assert auto_steps_per_execution(lenet, 8) >= auto_steps_per_execution(lenet, 128)


def test_steps_per_execution_divides_the_epoch():
    assert dividing_steps(16, 422) == 2 and dividing_steps(32, 64) == 32 and dividing_steps(4, 9) == 3


def test_forward_flops_of_a_known_model():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)  # 8*8 positions * 3*3*3*4 MACs
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(5)(x)  # 256*5 MACs
    model = keras.Model(inputs, outputs)
    assert forward_flops(model) == 2 * (64 * 108 + 256 * 5)


@pytest.mark.slow
def test_many_steps_per_execution_train_like_one(data_dir, tmp_path):
    """steps_per_execution groups steps into one call; the steps, the history and the
    checkpoints are the same. 4 does not divide the 9 steps an epoch (270 images, batch 32), so
    3 are run a call: Keras would drop the steps of a last partial call."""
    runs = {spe: kzoo.train(write_recipe(tmp_path / str(spe), precision="float32"),
                            steps_per_execution=spe, data_dir=data_dir,
                            run_dir=tmp_path / f"run{spe}", verbose=0)
            for spe in (1, 4) if (tmp_path / str(spe)).mkdir() is None}
    assert runs[4].metrics["steps_per_execution"] == 3
    assert runs[4].model.optimizer.iterations.numpy() == runs[1].model.optimizer.iterations.numpy() == 18
    np.testing.assert_allclose(runs[4].history["loss"], runs[1].history["loss"], rtol=1e-4)
    for one, four in zip(runs[1].model.weights, runs[4].model.weights):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(one), keras.ops.convert_to_numpy(four),
                                   rtol=1e-4, atol=1e-5)


def test_nan_stop_still_works_with_many_steps_per_execution(data_dir, tmp_path, capsys):
    recipe = write_recipe(tmp_path, optimizer={"name": "sgd", "learning_rate": 1e12}, epochs=3,
                          precision="float32")
    with pytest.raises(KzooError, match="NaN in the first epoch"):
        kzoo.train(recipe, steps_per_execution=8, data_dir=data_dir, run_dir=tmp_path / "run",
                   verbose=0)


def test_bad_steps_per_execution_flag_is_one_line(tmp_path, cli):
    result = cli("train", write_recipe(tmp_path), "--steps-per-execution", "0")
    assert_clean_error(result, "--steps-per-execution", "'0'")


# --- test-time augmentation -----------------------------------------------------------------------


def test_tta_views_weigh_to_one_and_shift_with_the_size():
    images = tf.random.uniform((2, 32, 32, 3))
    for mode, count in (("none", 1), ("flip", 2), ("flip+shift", 6)):
        views = tta_views(images, mode)
        assert len(views) == count
        assert sum(weight for weight, _ in views) == pytest.approx(1.0)
        assert all(view.shape == images.shape for _, view in views)
    assert (shift_pixels(32), shift_pixels(224)) == (1, 7)
    shifted = tta_views(images, "flip+shift")[2][1]
    np.testing.assert_array_equal(shifted[:, 1:, 1:], images[:, :-1, :-1])  # moved by (1, 1)


def test_flip_tta_averages_an_image_and_its_mirror():
    inputs = keras.Input((4, 4, 1))
    # the first column's mean decides the class: a mirror image moves it to the last column
    x = keras.layers.Flatten()(inputs)
    outputs = keras.layers.Dense(2, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    images = np.random.default_rng(0).random((3, 4, 4, 1)).astype("float32")
    plain = model.predict(images, verbose=0)
    mirrored = model.predict(images[:, :, ::-1], verbose=0)
    np.testing.assert_allclose(predict_batch(model, images, "flip"), (plain + mirrored) / 2,
                               rtol=1e-5)


def test_unknown_tta_mode_is_refused_in_a_recipe(tmp_path):
    with pytest.raises(KzooError, match="'tta' is 'mirror'; expected one of none, flip"):
        load_recipe(write_recipe(tmp_path, tta="mirror"))


@pytest.mark.slow
def test_predict_and_evaluate_with_tta_from_the_cli(tmp_path, cli):
    folder = write_image_folder(tmp_path / "shapes", {"red": 12, "green": 12}, size=(16, 16))
    run = kzoo.train(write_recipe(tmp_path, model="cifar_convnet", dataset=str(folder),
                                  model_options={"input_shape": [16, 16, 3], "num_classes": 2},
                                  validation_split=0.25, epochs=1, batch_size=8),
                     tta="flip", run_dir=tmp_path / "run", verbose=0)
    assert run.metrics["tta"] == "flip" and "val_accuracy_without_tta" in run.metrics
    evaluated = cli("evaluate", tmp_path / "run", folder, "--tta", "flip+shift", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    metrics = json.loads(evaluated.stdout)
    assert metrics["tta"] == "flip+shift" and metrics["examples"] == 24
    predicted = cli("predict", tmp_path / "run", folder / "red", "--tta", "flip", "--format", "json")
    assert predicted.returncode == 0, predicted.stderr
    rows = json.loads(predicted.stdout)
    assert len(rows) == 12
    assert all(abs(sum(p["probability"] for p in row["predictions"]) - 1) < 1e-3 for row in rows)
    bad = cli("predict", tmp_path / "run", folder / "red", "--tta", "rotate")
    assert_clean_error(bad, "--tta", "'rotate'")
