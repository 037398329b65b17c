"""kzoo on Keras's JAX backend, as a user runs it: ``KERAS_BACKEND=jax kzoo ...`` in a subprocess.

One tiny LeNet-5 run (320 synthetic digits, one epoch, with the ``digits`` augmentation in the
``tf.data`` pipeline) trains on JAX; its ``model.keras`` then reloads in this test process on
TensorFlow and must predict what JAX predicted. The same seed must give the same run on JAX too,
and an export Keras cannot make from JAX must fail with one clear line.
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from conftest import TINY_LENET_RECIPE, assert_clean_error, recipe_workspace, run_cli
from PIL import Image

import kzoo
from kzoo.analysis.evaluation import confusion_matrix
from kzoo.models.registry import load_model

pytest.importorskip("jax", reason="the JAX backend needs jax: pip install 'kzoo[jax]'")

RECIPE = TINY_LENET_RECIPE


def on_jax(*args, cwd):
    result = run_cli(*args, cwd=cwd, KERAS_BACKEND="jax")
    assert "Traceback" not in result.stderr, result.stderr
    return result


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tiny mnist.npz in data/, the recipe, and ten of the test digits as PNG files. Every
    split is whole batches of 32 (288 train, 32 validation, 96 test): on JAX a last, smaller
    batch costs a second compilation of the step, about as long as the epoch itself."""
    root = recipe_workspace(tmp_path_factory.mktemp("backends"), RECIPE, train=320, test=96)
    with np.load(root / "data" / "mnist.npz") as data:
        images, labels = data["x_test"], data["y_test"]
    (root / "digits").mkdir()
    for index, image in enumerate(images[:10]):
        Image.fromarray(image, "L").save(root / "digits" / f"{index:02d}.png")
    return root, images, labels


@pytest.fixture(scope="module")
def jax_run(workspace):
    root, _, _ = workspace
    result = on_jax("train", "tiny.yaml", "--data-dir", "data", "--run-dir", "run", cwd=root)
    return root / "run", result


@pytest.mark.slow
def test_training_on_jax_finishes_and_records_the_backend(jax_run):
    run_dir, result = jax_run
    assert result.returncode == 0, result.stdout + result.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert f"test accuracy {metrics['test_accuracy']:.4f}" in result.stdout
    assert metrics["status"] == "completed" and metrics["epochs_run"] == 1
    assert metrics["versions"]["backend"] == "jax"
    assert metrics["test_examples"] == 96
    assert (run_dir / "model.keras").is_file()


@pytest.mark.slow
def test_jax_model_reloads_on_tensorflow_and_predicts_the_same(jax_run, workspace):
    if keras.backend.backend() != "tensorflow":
        pytest.skip("the cross-backend check reloads the JAX model in a TensorFlow test process")
    run_dir, _ = jax_run
    root, images, labels = workspace
    metrics = json.loads((run_dir / "metrics.json").read_text())
    model = load_model(str(run_dir / "model.keras"))
    predicted = np.asarray(model.predict(images[..., None].astype("float32"), verbose=0)).argmax(-1)
    # The whole test split: the same confusion matrix as the JAX run computed and saved.
    assert confusion_matrix(labels.astype("int64"), predicted, 10).tolist() == \
        metrics["confusion_matrix"]

    # Image files: `kzoo predict` on JAX and kzoo.predict here give the same classes.
    printed = on_jax("predict", "run", "digits", "--top-k", "1", "--format", "json", cwd=root)
    assert printed.returncode == 0, printed.stderr
    on_jax_rows = {row["path"].rsplit("/", 1)[-1]: row["predictions"][0]
                   for row in json.loads(printed.stdout)}
    here = {p.path.rsplit("/", 1)[-1]: p.top[0] for p in kzoo.predict(run_dir, [root / "digits"],
                                                                       top_k=1)}
    assert len(here) == len(on_jax_rows) == 10
    for name, (label, probability) in here.items():
        assert on_jax_rows[name]["class"] == label, name
        assert on_jax_rows[name]["probability"] == pytest.approx(probability, abs=1e-4), name


@pytest.mark.slow
def test_same_seed_gives_the_same_run_on_jax(jax_run, workspace):
    root, _, _ = workspace
    first, _ = jax_run
    again = on_jax("train", "tiny.yaml", "--data-dir", "data", "--run-dir", "again", cwd=root)
    assert again.returncode == 0, again.stderr
    assert (root / "again" / "history.csv").read_text() == (first / "history.csv").read_text()
    one, two = (json.loads((run / "metrics.json").read_text()) for run in (first, root / "again"))
    assert (one["test_loss"], one["confusion_matrix"]) == (two["test_loss"], two["confusion_matrix"])


@pytest.mark.slow
def test_tensorflow_only_export_on_jax_is_one_clear_line(jax_run, workspace):
    root, _, _ = workspace
    result = on_jax("export", "run", "--format", "tflite", cwd=root)
    assert result.returncode == 2
    assert_clean_error(result, "tflite", "'jax' backend", "KERAS_BACKEND=tensorflow")
    assert not (root / "run" / "export" / "model.tflite").exists()


def test_out_of_memory_is_recognised_on_either_backend():
    """A tuning trial that runs out of memory fails with "search smaller batch sizes" on JAX
    too, where XLA raises a RuntimeError, not TensorFlow's ResourceExhaustedError."""
    import jax.errors
    import tensorflow as tf

    from kzoo.tuning import out_of_memory

    assert out_of_memory(tf.errors.ResourceExhaustedError(None, None, "OOM when allocating"))
    assert out_of_memory(jax.errors.JaxRuntimeError(
        "RESOURCE_EXHAUSTED: Out of memory while trying to allocate 1.00GiB."))
    assert not out_of_memory(jax.errors.JaxRuntimeError("INTERNAL: something else"))
    assert not out_of_memory(ValueError("RESOURCE_EXHAUSTED"))
