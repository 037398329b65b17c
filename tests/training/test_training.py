"""Training from Python: the run directory, reproducibility, NaN handling and the logic gates.

The runs are tiny: LeNet-5 for two epochs on 300 synthetic 28x28 digits, written by the test.
"""

from __future__ import annotations

import csv
import json
import math

import keras
import numpy as np
import pytest
import yaml
from conftest import write_mnist_npz

import kzoo
import kzoo.training.checkpoints
import kzoo.training.train

RECIPE = {
    "description": "LeNet-5 on a tiny synthetic mnist.npz",
    "model": "lenet5",
    "dataset": "mnist",
    "augmentation": "digits",
    "optimizer": {"name": "adam", "learning_rate": 0.003},
    "batch_size": 32,
    "epochs": 2,
    "seed": 0,
    "validation_split": 0.1,
}


def write_recipe(folder, name="tiny", **changes):
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**RECIPE, **changes}))
    return path


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    write_mnist_npz(folder, train=300, test=100)
    return folder


@pytest.fixture(scope="module")
def test_set(data_dir):
    with np.load(data_dir / "mnist.npz") as data:
        return data["x_test"][..., None].astype("float32"), data["y_test"].astype("int64")


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    """One finished run, shared by the tests that only read it."""
    folder = tmp_path_factory.mktemp("trained")
    return kzoo.train(write_recipe(folder), data_dir=data_dir, run_dir=folder / "run", verbose=0)


def read_history(path):
    with path.open() as handle:
        return list(csv.DictReader(handle))


def all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from all_layers(layer)


# --- one run and its directory ---------------------------------------------------------------


def test_train_returns_model_history_metrics_and_run_dir(trained):
    model, history, metrics, run_dir = trained
    assert isinstance(model, keras.Model)
    assert run_dir.is_dir()
    assert history["epoch"] == [0, 1]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert len(history[key]) == 2 and all(math.isfinite(v) for v in history[key])
    assert metrics["status"] == "completed"
    assert metrics["epochs_run"] == 2
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert metrics["test_examples"] == 100
    assert metrics["final_loss"] == history["loss"][-1]
    assert history["loss"][1] < history["loss"][0]  # it learned something


def test_run_dir_holds_every_result_file(trained):
    _, history, metrics, run_dir = trained
    for name in ("model.keras", "history.csv", "metrics.json", "confusion_matrix.csv",
                 "recipe.yaml"):
        assert (run_dir / name).is_file(), name
    assert json.loads((run_dir / "metrics.json").read_text())["test_accuracy"] == metrics["test_accuracy"]
    rows = read_history(run_dir / "history.csv")
    assert [int(row["epoch"]) for row in rows] == [0, 1]
    assert [float(row["loss"]) for row in rows] == pytest.approx(history["loss"])
    saved = kzoo.load_recipe(run_dir / "recipe.yaml")
    assert saved.to_dict() == kzoo.load_recipe(recipe_file_of(trained)).to_dict()
    events = list((run_dir / "logs").rglob("events.out.tfevents.*"))
    assert events and all(path.stat().st_size > 0 for path in events)
    assert not (run_dir / "backup").exists()  # a finished run leaves no resume state behind


def recipe_file_of(result):  # the recipe file sits next to the run dir
    return result.run_dir.parent / "tiny.yaml"


def test_confusion_matrix_csv_counts_the_test_set(trained, test_set):
    _, _, metrics, run_dir = trained
    with (run_dir / "confusion_matrix.csv").open() as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], rows[1:]
    assert header[1:] == [str(d) for d in range(10)]
    matrix = np.array([[int(v) for v in row[1:]] for row in body])
    assert matrix.shape == (10, 10)
    assert matrix.sum() == len(test_set[1]) == 100
    assert np.trace(matrix) / matrix.sum() == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    assert matrix.tolist() == metrics["confusion_matrix"]
    np.testing.assert_array_equal(matrix.sum(axis=1), np.bincount(test_set[1], minlength=10))


def test_saved_model_reloads_and_matches_the_metrics(trained, test_set):
    model, _, metrics, run_dir = trained
    reloaded = kzoo.load_model(str(run_dir / "model.keras"))
    images, labels = test_set
    predicted = np.asarray(reloaded.predict(images, verbose=0))
    np.testing.assert_allclose(predicted, np.asarray(model.predict(images, verbose=0)),
                               rtol=1e-5, atol=1e-6)
    accuracy = float(np.mean(predicted.argmax(axis=-1) == labels))
    assert accuracy == pytest.approx(metrics["test_accuracy"], abs=1e-6)


def test_augmentation_stays_out_of_the_saved_model(trained):
    _, _, _, run_dir = trained
    assert kzoo.load_recipe(run_dir / "recipe.yaml").augmentation == "digits"
    reloaded = kzoo.load_model(str(run_dir / "model.keras"))
    names = [type(layer).__name__ for layer in all_layers(reloaded)]
    assert names and not [name for name in names if name.startswith("Random")], names


def test_same_seed_gives_identical_results(trained, data_dir, tmp_path):
    again = kzoo.train(write_recipe(tmp_path), data_dir=data_dir, run_dir=tmp_path / "run",
                       verbose=0)
    assert again.history == trained.history
    for key in ("test_loss", "test_accuracy", "confusion_matrix"):
        assert again.metrics[key] == trained.metrics[key], key


def test_another_seed_gives_another_run(trained, data_dir, tmp_path):
    other = kzoo.train(write_recipe(tmp_path), data_dir=data_dir, run_dir=tmp_path / "run",
                       seed=1, epochs=1, verbose=0)
    assert other.history["loss"][0] != trained.history["loss"][0]


# --- refusals --------------------------------------------------------------------------------


def test_existing_run_dir_is_refused_without_resume(data_dir, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("mine")
    with pytest.raises(kzoo.KzooError) as error:
        kzoo.train(write_recipe(tmp_path), data_dir=data_dir, run_dir=run_dir, verbose=0)
    assert str(run_dir) in str(error.value) and "resume" in str(error.value)
    assert sorted(p.name for p in run_dir.iterdir()) == ["notes.txt"]  # left untouched


def test_resume_of_a_finished_run_is_refused(trained, data_dir):
    with pytest.raises(kzoo.KzooError, match="already finished"):
        kzoo.train(recipe_file_of(trained), data_dir=data_dir, run_dir=trained.run_dir,
                   resume=True, verbose=0)


def test_resume_with_other_settings_is_refused(trained, data_dir):
    with pytest.raises(kzoo.KzooError) as error:
        kzoo.train(recipe_file_of(trained), data_dir=data_dir, run_dir=trained.run_dir,
                   resume=True, epochs=5, verbose=0)
    assert "epochs" in str(error.value)


def test_batch_size_larger_than_the_training_set(data_dir, tmp_path):
    with pytest.raises(kzoo.KzooError) as error:
        kzoo.train(write_recipe(tmp_path), data_dir=data_dir, run_dir=tmp_path / "run",
                   batch_size=5000, verbose=0)
    message = str(error.value)
    assert "batch_size=5000" in message and "270" in message  # 300 minus the validation split


@pytest.mark.slow
def test_bad_input_leaves_no_run_dir_so_a_corrected_retry_works(data_dir, tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(kzoo.KzooError, match="dropout=1.5"):
        kzoo.train(write_recipe(tmp_path), data_dir=data_dir, run_dir=run_dir, dropout=1.5,
                   verbose=0)
    assert not run_dir.exists()
    result = kzoo.train(write_recipe(tmp_path), data_dir=data_dir, run_dir=run_dir, epochs=1,
                        verbose=0)
    assert result.metrics["status"] == "completed" and (run_dir / "model.keras").is_file()


# --- NaN -------------------------------------------------------------------------------------


def test_nan_in_the_first_epoch_leaves_no_model(data_dir, tmp_path, capsys):
    recipe = write_recipe(tmp_path, model="softmax_regression", augmentation="none",
                          optimizer={"name": "sgd", "learning_rate": 1e38})
    run_dir = tmp_path / "run"
    with pytest.raises(kzoo.KzooError) as error:
        kzoo.train(recipe, data_dir=data_dir, run_dir=run_dir, verbose=0)
    message = str(error.value)
    assert "NaN" in message and "no good model" in message and "learning rate" in message
    assert not (run_dir / "model.keras").exists()
    assert "NaN in epoch 1" in capsys.readouterr().out


def test_nan_in_a_later_epoch_keeps_the_last_good_model(data_dir, tmp_path, monkeypatch, capsys):
    """The learning rate jumps to 1e38 after two epochs, so the loss becomes NaN in epoch 3."""

    def blow_up_after_two_epochs(config, steps_per_epoch, epochs):
        rate = keras.optimizers.schedules.PiecewiseConstantDecay(
            [2 * steps_per_epoch], [0.01, 1e38])
        return keras.optimizers.SGD(rate)

    monkeypatch.setattr(kzoo.training.train, "make_optimizer", blow_up_after_two_epochs)
    recipe = write_recipe(tmp_path, model="softmax_regression", augmentation="none", epochs=5)
    result = kzoo.train(recipe, data_dir=data_dir, run_dir=tmp_path / "run", verbose=0)
    output = capsys.readouterr().out
    assert "NaN in epoch 3" in output and "kept the last good model" in output
    assert result.metrics["status"] == "stopped_nan"
    losses = result.history["loss"]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses[:2])
    assert math.isnan(losses[2])
    kept = kzoo.load_model(str(result.run_dir / "model.keras"))
    assert all(np.all(np.isfinite(np.asarray(w))) for w in kept.weights)
    assert 0.0 <= result.metrics["test_accuracy"] <= 1.0
    saved = json.loads((result.run_dir / "metrics.json").read_text())
    assert saved["status"] == "stopped_nan" and saved["test_accuracy"] == result.metrics["test_accuracy"]
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28, 1)).astype("float32")
    np.testing.assert_allclose(np.asarray(kept(images)), np.asarray(result.model(images)),
                               rtol=1e-5, atol=1e-6)


# --- the logic gates, run fully ---------------------------------------------------------------


@pytest.mark.parametrize("recipe", ["logic_or", "logic_and",
                                    pytest.param("logic_xor", marks=pytest.mark.slow)])
def test_logic_gate_recipes_reach_full_accuracy(recipe, tmp_path):
    result = kzoo.train(recipe, run_dir=tmp_path / "run", verbose=0)
    assert result.metrics["test_accuracy"] == 1.0
    assert result.metrics["epochs_run"] == kzoo.load_recipe(recipe).epochs
    assert np.asarray(result.metrics["confusion_matrix"]).trace() == 4


# --- resuming --------------------------------------------------------------------------------


class Stopped(Exception):
    """The run stops here, as a killed one would, after its checkpoint is written."""


@pytest.mark.slow
def test_a_stopped_and_resumed_lookahead_run_is_the_uninterrupted_run(data_dir, tmp_path,
                                                                       monkeypatch):
    """Lookahead's average of the weights is part of what a run resumes from: 270 training
    digits make 9 steps an epoch, so the run stops after step 18, between two updates of the
    average (every 4 steps: 16 and 20), with weights that are not the average. One step per
    execution: the average is updated after each step, as on a model too big to run several."""
    recipe = write_recipe(tmp_path, model_options={"dropout": 0.2}, epochs=3, lookahead=4,
                          steps_per_execution=1)
    whole = kzoo.train(recipe, data_dir=data_dir, run_dir=tmp_path / "whole", verbose=0)

    saving = kzoo.training.checkpoints.EpochCheckpoints.on_epoch_end

    def stop_after_epoch_two(self, epoch, logs=None):
        saving(self, epoch, logs)
        if epoch + 1 == 2:
            raise Stopped

    with monkeypatch.context() as patch:
        patch.setattr(kzoo.training.checkpoints.EpochCheckpoints, "on_epoch_end",
                      stop_after_epoch_two)
        with pytest.raises(Stopped):
            kzoo.train(recipe, data_dir=data_dir, run_dir=tmp_path / "cut", verbose=0)
    assert len(read_history(tmp_path / "cut" / "history.csv")) == 2
    assert sorted(path.name for path in (tmp_path / "cut" / "backup").glob("*.npz")) == [
        "epoch-0001.states.npz", "epoch-0002.states.npz"]

    resumed = kzoo.train(recipe, data_dir=data_dir, run_dir=tmp_path / "cut", resume=True,
                         verbose=0)
    assert resumed.history == whole.history
    assert (tmp_path / "cut" / "history.csv").read_text() == (
        tmp_path / "whole" / "history.csv").read_text()
    for first, second in zip(resumed.model.get_weights(), whole.model.get_weights(), strict=True):
        np.testing.assert_array_equal(first, second)
    assert resumed.metrics["test_loss"] == whole.metrics["test_loss"]
