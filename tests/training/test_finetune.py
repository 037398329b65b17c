"""Fine-tuning on tiny generated folders with tiny backbones: the two phases, BatchNorm kept in
inference mode, per-layer learning rates, local weight files, the run directory, the CLI."""

from __future__ import annotations

import contextlib
import io
import json

import keras
import numpy as np
import pytest
from messy_images import (
    MESSY_SKIPPED,
    make_clean_folder,
    make_split_folder,
    write_messy_files,
    write_mobilenet_weights,
)

import kzoo
from kzoo.cli.main import main as kzoo_cli
from kzoo.errors import KzooError
from kzoo.models.blocks import class_names_of
from kzoo.models.parts import classifier_parts
from kzoo.training.finetune import finetune_recipe
from kzoo.training.optimizers import discriminative_multipliers, with_lr_multipliers
from kzoo.training.phases import unfreeze_top

TINY = {"backbone": "mobilenet_v2", "model_options": {"alpha": 0.35, "image_size": 64},
        "batch_size": 8, "head_epochs": 2, "epochs": 1, "verbose": 0}


def tiny(**model_options):
    """TINY with more model options (``weights``, ...)."""
    return {**TINY, "model_options": {**TINY["model_options"], **model_options}}


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("KZOO_OFFLINE", "1")
    monkeypatch.delenv("KZOO_DATA_DIR", raising=False)
    monkeypatch.delenv("KZOO_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("KERAS_HOME", "/nonexistent-keras-home")


@pytest.fixture(scope="module")
def messy_folder(tmp_path_factory):
    root = make_split_folder(tmp_path_factory.mktemp("ants_bees"), train=6, val=3)
    write_messy_files(root / "train" / "ants")
    return root


@pytest.fixture(scope="module")
def mobilenet_weights(tmp_path_factory):
    """A MobileNetV2 (alpha 0.35, 64x64) weights file, as a user would pass with --weights."""
    return write_mobilenet_weights(tmp_path_factory.mktemp("weights") / "mobilenet_v2.weights.h5")


@pytest.fixture(scope="module")
def run(messy_folder, mobilenet_weights, tmp_path_factory):
    """One fine-tuning run on the messy folder (head on cached features, then the top layers
    with discriminative learning rates), with what it printed; shared by the checks below.
    """
    run_dir = tmp_path_factory.mktemp("runs") / "run"
    reference = kzoo.build("mobilenet_v2", num_classes=2, input_shape=(64, 64, 3), alpha=0.35,
                           weights=str(mobilenet_weights))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = kzoo.fine_tune(messy_folder, run_dir=run_dir,
                                discriminative_lr=0.1, feature_views=1, keep_best=False,
                                **{**tiny(weights=mobilenet_weights), "verbose": 2})
    return result, reference, printed.getvalue()


@pytest.mark.slow
def test_a_worse_fine_tuning_phase_keeps_the_head_phase_model(messy_folder, mobilenet_weights,
                                                              tmp_path):
    reference = kzoo.build("mobilenet_v2", num_classes=2, input_shape=(64, 64, 3), alpha=0.35,
                           weights=str(mobilenet_weights))
    result = kzoo.fine_tune(messy_folder, run_dir=tmp_path / "run",
                            learning_rate=50.0, **tiny(weights=mobilenet_weights))  # phase two wrecks the model
    history = result.history
    assert history["phase"] == ["head", "head", "fine-tune"]
    head_best = max(range(2), key=lambda i: (history["val_accuracy"][i], -history["val_loss"][i]))
    assert result.metrics["kept_epoch"] == {"epoch": head_best + 1, "phase": "head"}
    before, after = _backbone_weights(reference), _backbone_weights(result.model)
    assert np.array_equal(before["Conv_1/kernel"], after["Conv_1/kernel"])  # phase two undone
    assert f"epoch {head_best + 1} (head), the best validation epoch" in (
        result.run_dir / "report.html").read_text()
    assert json.loads((result.run_dir / "audit.json").read_text())["splits"]["train"]["images"] > 0


def _backbone_weights(model):
    backbone = classifier_parts(model).backbone
    return {w.path: np.array(w) for w in backbone.weights}


@pytest.mark.slow
def test_run_directory_holds_everything(run):
    result, _, _ = run
    files = {p.name for p in result.run_dir.iterdir()}
    assert {"model.keras", "class_names.json", "recipe.yaml", "history.csv", "metrics.json",
            "confusion_matrix.csv", "skipped.csv", "predictions.csv", "report.html"} <= files
    assert json.loads((result.run_dir / "class_names.json").read_text()) == ["ants", "bees"]
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and 0 <= metrics["val_accuracy"] <= 1
    assert metrics["validation"]["examples"] == 6 and metrics["skipped"] == len(MESSY_SKIPPED)
    assert [row["class"] for row in metrics["validation"]["per_class"]] == ["ants", "bees"]
    assert result.history["phase"] == ["head", "head", "fine-tune"]
    assert (result.run_dir / "history.csv").read_text().startswith("epoch,phase,loss,accuracy")
    skipped = (result.run_dir / "skipped.csv").read_text()
    assert all(name in skipped for name in MESSY_SKIPPED)


@pytest.mark.slow
def test_saved_model_loads_in_safe_mode_with_its_class_names(run):
    result, _, _ = run
    loaded = keras.saving.load_model(result.run_dir / "model.keras", safe_mode=True)
    assert class_names_of(loaded) == ["ants", "bees"]
    assert getattr(loaded, "optimizer", None) is None  # saved for inference: small, no custom optimizer inside
    pixels = np.random.default_rng(0).uniform(0, 255, (3, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(loaded.predict(pixels, verbose=0),
                               result.model.predict(pixels, verbose=0), atol=1e-6)


@pytest.mark.slow
def test_backbone_batchnorm_and_bottom_layers_are_untouched(run):
    result, reference, _ = run
    before, after = _backbone_weights(reference), _backbone_weights(result.model)
    batchnorm = [path for path in before if "bn" in path.split("/")[0].lower()]
    assert batchnorm and all(np.array_equal(before[p], after[p]) for p in batchnorm)
    assert np.array_equal(before["Conv1/kernel"], after["Conv1/kernel"])  # below the cut
    assert not np.array_equal(before["Conv_1/kernel"], after["Conv_1/kernel"])  # top: trained


@pytest.mark.slow
def test_skipped_files_are_summarised_before_training(run):
    result, _, printed = run
    summary = printed.index(f"{len(MESSY_SKIPPED)} files skipped:")
    assert summary < printed.index("cached backbone features") < printed.index("Epoch 1/")
    assert "train/ants/truncated.jpg: corrupt, truncated" in printed
    assert "train/ants/notes.txt: not an image (.txt file)" in printed
    assert result.metrics["timings_s"].keys() >= {"features_s", "head_s", "finetune_s"}


@pytest.mark.slow
def test_resnet50_end_to_end_with_a_local_weights_file(tmp_path):
    weights = tmp_path / "resnet50_local.weights.h5"
    saved = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3))
    saved.save_weights(weights)
    folder = make_split_folder(tmp_path / "data", train=4, val=2)
    result = kzoo.fine_tune(folder, backbone="resnet50",
                            model_options={"weights": weights, "image_size": 32},
                            batch_size=8, head_epochs=2, epochs=1, unfreeze=0.05, verbose=0,
                            run_dir=tmp_path / "run")
    assert result.history["phase"] == ["head", "head", "fine-tune"]
    backbone = classifier_parts(result.model).backbone  # loaded from the file; below the cut: as saved
    assert np.array_equal(np.array(saved.get_layer("conv1_conv").kernel),
                          np.array(backbone.get_layer("conv1_conv").kernel))
    assert result.model.name == "resnet50" and (result.run_dir / "report.html").is_file()


def test_weights_with_the_published_name_must_match_its_hash(tmp_path):
    fake = tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    fake.write_bytes(b"not the published file")
    with pytest.raises(KzooError, match="corrupt or not the published file: md5"):
        kzoo.build("resnet50", num_classes=2, input_shape=(64, 64, 3), weights=str(fake))


def test_imagenet_offline_names_the_file_and_how_to_pass_it():
    with pytest.raises(KzooError) as error:
        kzoo.build("mobilenet_v2", num_classes=2, alpha=0.35)
    message = str(error.value)
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5" in message
    assert "--weights PATH" in message and "KZOO_OFFLINE" in message


def test_imagenet_finds_the_keras_file_in_a_data_dir(tmp_path, monkeypatch):
    name = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5"
    (tmp_path / "weights").mkdir()
    saved = keras.applications.MobileNetV2(alpha=0.35, include_top=False, weights=None,
                                           input_shape=(96, 96, 3))
    saved.save(tmp_path / "weights" / name)  # the legacy .h5 layout Keras's own files have
    monkeypatch.setenv("KZOO_DATA_DIR", str(tmp_path))
    model = kzoo.build("mobilenet_v2", num_classes=2, input_shape=(96, 96, 3), alpha=0.35)
    kernel = classifier_parts(model).backbone.get_layer("Conv1").kernel
    assert np.array_equal(np.array(kernel), np.array(saved.get_layer("Conv1").kernel))


def test_lr_multipliers_scale_each_variables_step():
    inputs = keras.Input((3,))
    outputs = keras.layers.Dense(1, name="top")(keras.layers.Dense(4, name="bottom")(inputs))
    model = keras.Model(inputs, outputs)
    before = {v.path: np.array(v) for v in model.trainable_variables}
    optimizer = with_lr_multipliers(keras.optimizers.Adam(0.01), {"bottom/*": 0.25, "top/bias": 0})
    model.compile(optimizer=optimizer, loss="mse")
    x, y = np.ones((4, 3), "float32"), np.full((4, 1), 5.0, "float32")
    model.train_on_batch(x, y)
    step = {v.path: np.abs(np.array(v) - before[v.path]).max() for v in model.trainable_variables}
    # Adam's first step moves every weight by about the learning rate, times the multiplier.
    assert step["top/kernel"] == pytest.approx(0.01, rel=1e-3)
    assert step["bottom/kernel"] == pytest.approx(0.0025, rel=1e-3)
    assert step["top/bias"] == 0
    assert optimizer.get_config()["lr_multipliers"] == {"bottom/*": 0.25, "top/bias": 0.0}


def test_unfreeze_top_and_discriminative_multipliers():
    model = kzoo.build("mobilenet_v2", num_classes=2, input_shape=(32, 32, 3), alpha=0.35,
                       weights=None)
    unfrozen = unfreeze_top(model, 0.2)
    backbone = classifier_parts(model).backbone
    assert unfrozen and unfrozen[-1].name == "Conv_1"
    assert not backbone.get_layer("Conv1").trainable
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in unfrozen)
    multipliers = discriminative_multipliers(unfrozen, 0.01)
    assert multipliers["Conv_1"] == 1.0 and multipliers[unfrozen[0].name] == pytest.approx(0.01)
    assert unfreeze_top(model, 0.0) == [] and not backbone.trainable
    with pytest.raises(KzooError, match="no pretrained backbone"):
        unfreeze_top(kzoo.build("lenet5"), 0.5)


def test_recipe_settings_and_overrides(tmp_path):
    recipe = finetune_recipe(tmp_path, recipe="mobilenet_v2_ants_bees", epochs=3, unfreeze=0.5,
                             model_options={"weights": "w.h5", "image_size": 96})
    assert recipe.dataset == str(tmp_path) and recipe.epochs == 3
    assert recipe.finetune.unfreeze == 0.5
    assert recipe.model_options["weights"] == "w.h5" and recipe.model_options["alpha"] == 0.35
    assert recipe.model_options["input_shape"] == [96, 96, 3]
    switched = finetune_recipe(tmp_path, recipe="mobilenet_v2_ants_bees", backbone="resnet50")
    assert switched.model == "resnet50" and "alpha" not in switched.model_options
    with pytest.raises(KzooError, match="unfreeze"):
        finetune_recipe(tmp_path, unfreeze=1.5)
    with pytest.raises(KzooError, match="pass an image FOLDER"):
        finetune_recipe()


@pytest.mark.slow
def test_train_routes_a_finetune_recipe(tmp_path):
    """``kzoo.train`` on a recipe with a ``finetune:`` section fine-tunes; here on a flat
    folder (a validation split is carved out), the head trained without cached features, and
    nothing unfrozen after it.
    """
    folder = make_clean_folder(tmp_path / "flat", per_class=8)
    recipe = tmp_path / "tiny_finetune.yaml"
    recipe.write_text(
        f"model: mobilenet_v2\ndataset: {folder}\nvalidation_split: 0.25\n"
        "model_options: {alpha: 0.35, weights: null, input_shape: [32, 32, 3]}\n"
        "batch_size: 8\nepochs: 1\n"
        "finetune: {head_epochs: 1, unfreeze: 0, cache_features: false, center_crop: null}\n"
    )
    result = kzoo.train(str(recipe), run_dir=tmp_path / "run", verbose=0)
    assert result.history["phase"] == ["head"]
    assert result.metrics["sizes"]["validation"] == 4
    assert "features_s" not in result.metrics["timings_s"]
    assert (result.run_dir / "report.html").is_file()
    with pytest.raises(KzooError, match="cannot be resumed"):
        kzoo.train(str(recipe), resume=True)


def test_cli_finetune_errors_are_one_line(tmp_path, capsys):
    """Bad input stops ``kzoo finetune`` before any training, with one line on stderr (the
    command itself runs in a subprocess in test_inference.py)."""
    make_clean_folder(tmp_path / "one", classes=("ants",), per_class=2)
    assert kzoo_cli(["finetune", str(tmp_path / "one"), "--weights", "none"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("kzoo: error: image folder") and "expected at least 2" in error
    assert "\n" not in error
    assert kzoo_cli(["finetune", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert kzoo_cli(["finetune", str(tmp_path / "one"), "--backbone", "lenet5"]) == 2
    assert "no pretrained backbone to fine-tune" in capsys.readouterr().err


def test_bad_data_or_a_used_run_dir_fail_before_any_work(tmp_path):
    make_clean_folder(tmp_path / "one", classes=("ants",), per_class=2)
    with pytest.raises(KzooError, match="expected at least 2"):
        kzoo.fine_tune(tmp_path / "one", model_options={"weights": None}, run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()  # no half-made run directory left behind
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "model.keras").write_text("")
    with pytest.raises(KzooError, match="not empty"):
        kzoo.fine_tune(tmp_path / "one", model_options={"weights": None},
                       run_dir=tmp_path / "used")


def test_missing_weights_leave_no_run_dir_behind(tmp_path):
    make_clean_folder(tmp_path / "photos", classes=("ants", "bees"), per_class=3)
    with pytest.raises(KzooError, match="--weights PATH"):
        kzoo.fine_tune(tmp_path / "photos", run_dir=tmp_path / "run", **TINY)  # imagenet, offline
    assert not (tmp_path / "run").exists()  # so the same command works once the weights are there
