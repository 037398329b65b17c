"""Training on image folders: class weights reach the loss, a folder without test/ has no test
split (and no train+validation run), the best epoch is kept, and evaluate / predict stream."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import yaml
from conftest import assert_clean_error, write_image_folder

import kzoo
from kzoo.data import pipeline
from kzoo.data.datasets import image_folder
from kzoo.data.images import read_image
from kzoo.errors import KzooError
from kzoo.recipes.zoo import load_recipe
from kzoo.training.callbacks import KeepGoodEpoch
from kzoo.training.optimizers import class_weights
from kzoo.training.train import with_validation_in_train


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KZOO_CACHE_DIR", str(tmp_path / "cache"))


def folder_recipe(tmp_path, classes, **extra):
    """A softmax-regression recipe on a generated 8x8 folder (imbalanced as ``classes`` says)."""
    folder = write_image_folder(tmp_path / "shapes", classes, size=(8, 8))
    recipe = {"model": "softmax_regression", "dataset": str(folder),
              "model_options": {"input_shape": [8, 8, 3], "num_classes": len(classes)},
              "optimizer": {"name": "sgd", "learning_rate": 0.01}, "batch_size": 8, "epochs": 1,
              "validation_split": 0.25, **extra}
    path = tmp_path / "shapes.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path, folder


def test_balanced_class_weights():
    recipe = load_recipe_dict({"class_weight": "balanced"})
    assert class_weights(recipe, np.array([0, 0, 0, 1]), 2) == {0: 4 / 6, 1: 2.0}
    assert class_weights(load_recipe_dict({}), np.array([0, 1]), 2) is None
    with pytest.raises(KzooError, match="class_weight.*'heavy'.*expected balanced"):
        load_recipe_dict({"class_weight": "heavy"})


def load_recipe_dict(extra):
    from kzoo.recipes.recipe import recipe_from_dict

    return recipe_from_dict("r", {"model": "mlp", "dataset": "mnist", **extra}, "test")


@pytest.mark.slow
def test_class_weight_changes_the_loss_of_a_run(tmp_path):
    recipe, _ = folder_recipe(tmp_path, {"common": 30, "rare": 6})
    plain = kzoo.train(recipe, run_dir=tmp_path / "plain", verbose=0)
    weighted = kzoo.train(recipe, run_dir=tmp_path / "weighted", class_weight="balanced", verbose=0)
    again = kzoo.train(recipe, run_dir=tmp_path / "again", verbose=0)
    assert plain.history["loss"] == again.history["loss"]  # same seed, same loss ...
    assert weighted.history["loss"][0] != pytest.approx(plain.history["loss"][0], rel=1e-3)
    saved = load_recipe(tmp_path / "weighted" / "recipe.yaml")
    assert saved.class_weight == "balanced"


@pytest.mark.slow
def test_a_folder_without_test_has_no_test_split_and_no_train_plus_validation(tmp_path, cli):
    recipe, folder = folder_recipe(tmp_path, {"a": 12, "b": 12})
    splits = image_folder(folder, (8, 8), validation_split=0.25, progress=False)
    assert not splits.has_test and set(splits.examples) == {"train", "validation"}
    with pytest.raises(KzooError, match="no test split"):
        with_validation_in_train(splits, str(folder))
    with pytest.raises(KzooError, match="no test split"):
        kzoo.train(recipe, run_dir=tmp_path / "run", train_on_validation=True, verbose=0)
    assert not (tmp_path / "run").exists()
    result = cli("tune", str(recipe), "--retrain-best", "--max-trials", "1",
                 KZOO_CACHE_DIR=str(tmp_path / "cache"))
    assert_clean_error(result, "no test split", "--retrain-best")
    assert not (tmp_path / "tuning").exists()

    run = cli("train", str(recipe), "--run-dir", "run", KZOO_CACHE_DIR=str(tmp_path / "cache"))
    assert run.returncode == 0, run.stderr
    assert "validation (no test split) accuracy" in run.stdout and "test accuracy" not in run.stdout
    assert "no test/ folder: there is no test split" in run.stdout  # the audit's warning
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["test_split"] == "validation" and "test_accuracy" not in metrics
    assert 0 <= metrics["val_accuracy"] <= 1
    predicted = cli("predict", "run", str(folder / "a" / "0000.png"))  # class names, not 0 / 1
    assert predicted.returncode == 0, predicted.stderr
    assert {predicted.stdout.splitlines()[1].split()[i] for i in (1, 3)} == {"a", "b"}


def test_keep_best_epoch_restores_the_best_validation_weights():
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    keep = KeepGoodEpoch("best")
    keep.set_model(model)
    keep.on_train_begin()
    scores = [(0.5, 1.0), (0.8, 0.6), (0.8, 0.7), (0.6, 0.5)]  # epoch 1 is best (tie: lower loss)
    for epoch, (accuracy, loss) in enumerate(scores):
        model.set_weights([np.full((1, 1), epoch, "float32"), np.zeros(1, "float32")])
        keep.on_epoch_end(epoch, {"loss": 1.0, "val_accuracy": accuracy, "val_loss": loss})
    keep.on_train_end()
    assert keep.best_epoch == 1 and model.get_weights()[0][0, 0] == 1

    baseline = KeepGoodEpoch("best", baseline=(0.9, 0.2))  # phase two keeps phase one's model ...
    baseline.set_model(model)
    model.set_weights([np.full((1, 1), 7, "float32"), np.zeros(1, "float32")])
    baseline.on_train_begin()
    model.set_weights([np.full((1, 1), 8, "float32"), np.zeros(1, "float32")])
    baseline.on_epoch_end(0, {"loss": 1.0, "val_accuracy": 0.85, "val_loss": 0.3})
    baseline.on_train_end()
    assert baseline.best_epoch is None and model.get_weights()[0][0, 0] == 7  # ... when no epoch beats it


@pytest.mark.slow
def test_evaluate_and_predict_stream_a_folder_in_chunks(tmp_path, monkeypatch):
    recipe, folder = folder_recipe(tmp_path, {"a": 20, "b": 20})
    run = kzoo.train(recipe, run_dir=tmp_path / "run", verbose=0)
    expected = kzoo.evaluate(tmp_path / "run", folder)
    monkeypatch.setenv("KZOO_IN_MEMORY_LIMIT_MB", "0.005")  # 40 images of 192 bytes: > 5 KB
    monkeypatch.setattr(pipeline, "BLOCK_BYTES", 7 * 192)
    monkeypatch.setattr(pipeline, "_in_memory_batches", _forbidden)
    streamed = kzoo.evaluate(tmp_path / "run", folder, batch_size=4)
    assert streamed["examples"] == 40 and streamed["accuracy"] == expected["accuracy"]
    assert streamed["confusion_matrix"] == expected["confusion_matrix"]
    assert streamed["loss"] == pytest.approx(expected["loss"], rel=1e-5)

    files = sorted((folder / "a").glob("*.png")) + sorted((folder / "b").glob("*.png"))
    results = kzoo.predict(tmp_path / "run", [folder], batch_size=2, top_k=2)  # chunks of 16
    assert [r.path for r in results] == [str(f) for f in files]
    pixels = np.stack([read_image(f, (8, 8)) for f in files]).astype("float32")
    probabilities = run.model.predict(pixels, verbose=0)
    for result, row in zip(results, probabilities):
        assert dict(result.top)[result.top[0][0]] == pytest.approx(float(row.max()), abs=1e-5)
        assert result.top[0][0] == ["a", "b"][int(row.argmax())]


def _forbidden(*args, **kwargs):
    raise AssertionError("the in-memory path was used")
