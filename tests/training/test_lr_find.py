"""The learning-rate finder: the sweep itself, ``kzoo lr-find`` on a recipe and on a folder,
and ``--lr auto`` on ``train`` and ``finetune``."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from conftest import TINY_LENET_RECIPE, recipe_workspace, run_cli
from messy_images import make_split_folder, write_mobilenet_weights
from PIL import Image

import kzoo
from kzoo.models.registry import load_model
from kzoo.recipes.zoo import load_recipe
from kzoo.training.lr_finder import RULE, SKIP_END, LRFind, sweep

RECIPE = {**TINY_LENET_RECIPE, "model_options": {},
          "optimizer": {"name": "adam", "learning_rate": 0.003, "schedule": {"name": "cosine"}}}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return recipe_workspace(tmp_path_factory.mktemp("lr_find"), RECIPE, train=320, test=64)


def test_the_sweep_grows_the_rate_exponentially_and_stops_when_the_loss_diverges():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    batches = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)] * 100
    before = [w.copy() for w in model.get_weights()]
    found = sweep(model, batches, start=1e-4, end=1e4, steps=300)
    for kept, was in zip(model.get_weights(), before):  # the finder put the weights back
        np.testing.assert_array_equal(kept, was)
    rates = np.asarray(found.rates)
    np.testing.assert_allclose(rates[1:] / rates[:-1], (1e4 / 1e-4) ** (1 / 299), rtol=1e-9)
    assert found.diverged and len(rates) < 300  # SGD at 1e3 blows the loss up
    kept = slice(len(rates) // 10, len(rates) - SKIP_END)  # the ends are left out
    lowest = kept.start + int(np.nanargmin(found.smoothed[kept]))
    assert found.minimum == rates[lowest] and found.suggestion == pytest.approx(rates[lowest] / 10)
    assert found.smoothed[lowest] < found.smoothed[kept.start]  # the loss fell before it rose
    assert rates[kept.start] <= found.steepest <= found.minimum
    assert found.warning is None and found.summary()["warning"] is None


def rates_and_losses(losses):
    rates = [1e-7 * (1e8) ** (step / 199) for step in range(len(losses))]
    return LRFind(rates=rates, losses=[float(loss) for loss in losses])


def test_the_ends_of_the_curve_are_left_out_of_the_minimum():
    """A dip in the first tenth (the rates too small to train) and a drop in the last steps
    (noise before divergence) do not decide the minimum; the valley in between does."""
    losses = np.full(200, 2.0)
    losses[:15] = 0.5
    losses[100:130] = 1.0
    losses[-3:] = 0.1
    found = rates_and_losses(losses)
    assert found.rates[100] <= found.minimum < found.rates[130]
    assert found.summary()["warning"] is None


def test_a_loss_that_only_rises_gives_a_warning(capsys):
    """After a trained head the loss may only rise: the suggestion then sits at the start of
    the sweep, and the finder says so, in the summary and in one printed line."""
    found = rates_and_losses(np.linspace(0.2, 3.0, 200))
    assert found.minimum == found.rates[20]  # the first step kept: the first tenth is left out
    assert "the loss never fell" in found.summary()["warning"]
    assert found.summary()["warning"] == found.warning == found.to_dict()["warning"]
    assert json.loads(json.dumps(found.to_dict()))["warning"] == found.warning

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype("float32")
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    losses = iter(np.linspace(0.5, 1.5, 200))  # slowly: no divergence

    class RisingLoss(keras.callbacks.Callback):  # the loss a trained head shows, step by step
        def on_train_batch_end(self, batch, logs=None):
            logs["loss"] = next(losses)

    original_fit = model.fit

    def fit(*args, callbacks=(), **kwargs):
        return original_fit(*args, callbacks=[RisingLoss(), *callbacks], **kwargs)

    model.fit = fit
    batches = [(x[:16], (x[:16, 0] > 0).astype("int64"))] * 200
    swept = sweep(model, batches, steps=60, start=1e-6, end=1e-5)
    printed = [line for line in capsys.readouterr().out.splitlines() if "never fell" in line]
    assert len(printed) == 1 and printed[0].startswith("kzoo: warning:")
    np.testing.assert_allclose(swept.losses, np.linspace(0.5, 1.5, 200)[:60])
    assert swept.summary()["warning"] and swept.minimum == swept.rates[6]


@pytest.mark.slow
def test_lr_find_on_a_recipe_writes_the_plot_and_prints_the_suggestion(workspace):
    result = run_cli("lr-find", "tiny.yaml", "--data-dir", "data", "--run-dir", "sweep",
                     "--steps", "80", cwd=workspace)
    assert result.returncode == 0, result.stderr
    found = json.loads((workspace / "sweep" / "lr_find.json").read_text())
    assert found["rule"] == RULE and 1e-7 < found["suggestion"] < 10
    assert f"suggested learning rate {found['suggestion']:.3g}" in result.stdout
    assert RULE in result.stdout
    with Image.open(workspace / "sweep" / "lr_find.png") as picture:
        pixels = np.asarray(picture.convert("RGB"))
    assert pixels.shape[0] > 200 and pixels.std() > 10  # a plot, not a blank page


@pytest.mark.slow
def test_train_lr_auto_is_the_run_of_the_suggested_rate(workspace):
    auto = run_cli("train", "tiny.yaml", "--data-dir", "data", "--run-dir", "auto", "--lr",
                   "auto", "--quiet", cwd=workspace)
    assert auto.returncode == 0, auto.stderr
    metrics = json.loads((workspace / "auto" / "metrics.json").read_text())
    rate = metrics["learning_rate_finder"]["suggestion"]
    assert load_recipe(workspace / "auto" / "recipe.yaml").optimizer.learning_rate == rate
    assert (workspace / "auto" / "lr_find.png").is_file()
    assert "learning-rate finder suggests" in auto.stdout
    given = run_cli("train", "tiny.yaml", "--data-dir", "data", "--run-dir", "given", "--lr",
                    repr(rate), "--quiet", cwd=workspace)
    assert given.returncode == 0, given.stderr
    for first, second in zip(load_model(str(workspace / "auto" / "model.keras")).get_weights(),
                             load_model(str(workspace / "given" / "model.keras")).get_weights()):
        np.testing.assert_allclose(first, second, atol=1e-6)


@pytest.mark.slow
def test_finetune_lr_auto_and_lr_find_on_a_folder(tmp_path):
    folder = make_split_folder(tmp_path / "photos", train=8, val=3)
    weights = write_mobilenet_weights(tmp_path / "mobilenet.weights.h5")
    tiny = {"backbone": "mobilenet_v2", "batch_size": 8, "head_epochs": 1,
            "model_options": {"alpha": 0.35, "image_size": 64, "weights": str(weights)}}
    result = kzoo.fine_tune(folder, learning_rate="auto", epochs=1, run_dir=tmp_path / "run",
                            verbose=0, **tiny)
    rate = result.metrics["learning_rate_finder"]["suggestion"]
    assert load_recipe(tmp_path / "run" / "recipe.yaml").optimizer.learning_rate == rate
    assert (tmp_path / "run" / "lr_find.png").is_file()

    found = kzoo.lr_find(folder, run_dir=tmp_path / "sweep", verbose=0, head_epochs=1, steps=30,
                         **{key: value for key, value in tiny.items() if key != "head_epochs"})
    assert found["rule"] == RULE and found["run_dir"] == tmp_path / "sweep"
    assert found["steps"] <= 30  # the folder's sweep takes --steps too
    assert (tmp_path / "sweep" / "lr_find.png").is_file()
    assert not (tmp_path / "sweep" / "model.keras").exists()  # the sweep alone, no training
