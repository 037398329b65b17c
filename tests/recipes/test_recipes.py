"""Recipes: every file in zoo_configs/ is valid, and bad YAML is reported with file and key."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest
import yaml

import kzoo
from kzoo.data.augment import PRESETS
from kzoo.data.datasets import DATASETS
from kzoo.models.registry import get_spec
from kzoo.recipes.recipe import OPTIMIZERS, SCHEDULES, Recipe
from kzoo.recipes.zoo import recipe_dirs, save_recipe

ZOO = Path(__file__).resolve().parents[2] / "zoo_configs"
ZOO_FILES = sorted(ZOO.glob("*.yaml"))

MINIMAL = {"model": "lenet5", "dataset": "mnist"}


def write_recipe(folder: Path, data: dict, name: str = "mine") -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_zoo_configs_is_where_named_recipes_come_from():
    assert ZOO_FILES
    assert recipe_dirs()[0] == ZOO
    assert {path.stem for path in ZOO_FILES} <= set(kzoo.list_recipes())


@pytest.mark.parametrize("path", ZOO_FILES, ids=lambda p: p.stem)
def test_every_zoo_recipe_is_valid(path):
    recipe = kzoo.load_recipe(path.stem)
    assert recipe == kzoo.load_recipe(path)  # by name and by path: the same recipe
    assert recipe.name == path.stem
    assert recipe.model in kzoo.list_models()
    if recipe.dataset not in DATASETS:  # an image folder, looked up in the data dir at run time
        assert not difflib.get_close_matches(recipe.dataset, DATASETS, cutoff=0.75), recipe.dataset
    assert recipe.augmentation in PRESETS
    assert recipe.optimizer.name in OPTIMIZERS and recipe.optimizer.schedule in SCHEDULES
    assert set(recipe.model_options) <= set(get_spec(recipe.model).options)
    if recipe.expected_accuracy is not None:
        assert 0 < recipe.expected_accuracy <= 1
    assert recipe.description


@pytest.mark.parametrize("path", ZOO_FILES, ids=lambda p: p.stem)
def test_zoo_recipe_survives_a_save_and_load(path, tmp_path):
    """A run saves its recipe.yaml and compares it on resume: the round trip must be exact."""
    recipe = kzoo.load_recipe(path)
    saved = tmp_path / f"{recipe.name}.yaml"
    save_recipe(recipe, saved)
    assert kzoo.load_recipe(saved) == recipe


def test_a_minimal_recipe_gets_the_defaults_and_round_trips(tmp_path):
    recipe = kzoo.load_recipe(write_recipe(tmp_path, MINIMAL))
    assert recipe == Recipe(name="mine", model="lenet5", dataset="mnist")
    assert recipe.expected_accuracy is None
    save_recipe(recipe, tmp_path / "again.yaml")
    assert kzoo.load_recipe(tmp_path / "again.yaml").to_dict() == recipe.to_dict()


def test_unknown_key_names_the_file_and_the_key(tmp_path):
    path = write_recipe(tmp_path, {**MINIMAL, "epocs": 3})
    with pytest.raises(kzoo.KzooError) as error:
        kzoo.load_recipe(path)
    message = str(error.value)
    assert str(path) in message and "'epocs'" in message
    assert "'epochs'" in message  # the close match


def test_unknown_optimizer_key_is_named(tmp_path):
    path = write_recipe(tmp_path, {**MINIMAL, "optimizer": {"name": "sgd", "lr": 0.1}})
    with pytest.raises(kzoo.KzooError) as error:
        kzoo.load_recipe(path)
    assert str(path) in str(error.value) and "'lr'" in str(error.value)


@pytest.mark.parametrize(
    "key, value",
    [("epochs", "ten"), ("batch_size", 12.5), ("model_options", [1]), ("validation_split", "x"),
     ("epochs", True), ("steps_per_execution", "many"), ("lookahead", 2.5),
     ("label_smoothing", "some")],
)
def test_wrong_type_names_the_key_and_the_value(tmp_path, key, value):
    path = write_recipe(tmp_path, {**MINIMAL, key: value})
    with pytest.raises(kzoo.KzooError) as error:
        kzoo.load_recipe(path)
    message = str(error.value)
    assert f"'{key}'" in message and repr(value) in message and str(path) in message


@pytest.mark.parametrize(
    "key, value",
    [("epochs", 0), ("batch_size", -1), ("validation_split", 0.95), ("expected_accuracy", 1.5),
     ("steps_per_execution", 0), ("label_smoothing", 1.0), ("lookahead", -1),
     ("precision", "float8"), ("tta", "rotate"), ("freeze_after", {"whiten": -2})],
)
def test_out_of_range_values_are_named(tmp_path, key, value):
    with pytest.raises(kzoo.KzooError) as error:
        kzoo.load_recipe(write_recipe(tmp_path, {**MINIMAL, key: value}))
    assert f"'{key}'" in str(error.value) and repr(value) in str(error.value)


def test_missing_required_key_is_named(tmp_path):
    with pytest.raises(kzoo.KzooError, match="'dataset'"):
        kzoo.load_recipe(write_recipe(tmp_path, {"model": "lenet5"}))


def test_a_recipe_must_be_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- model\n- dataset\n")
    with pytest.raises(kzoo.KzooError, match="mapping"):
        kzoo.load_recipe(path)


def test_invalid_yaml_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("model: [lenet5\n")
    with pytest.raises(kzoo.KzooError) as error:
        kzoo.load_recipe(path)
    assert str(path) in str(error.value)


def test_bad_optimizer_name(tmp_path):
    path = write_recipe(tmp_path, {**MINIMAL, "optimizer": {"name": "adamw"}})
    with pytest.raises(kzoo.KzooError) as error:
        kzoo.load_recipe(path)
    message = str(error.value)
    assert "'adamw'" in message and all(name in message for name in OPTIMIZERS)


def test_bad_schedule_name(tmp_path):
    path = write_recipe(tmp_path, {**MINIMAL, "optimizer": {"schedule": {"name": "linear"}}})
    with pytest.raises(kzoo.KzooError) as error:
        kzoo.load_recipe(path)
    message = str(error.value)
    assert "'linear'" in message and all(name in message for name in SCHEDULES)


def test_bad_schedule_option(tmp_path):
    schedule = {"name": "step", "every_epochs": 3, "gamma": 0.1}
    with pytest.raises(kzoo.KzooError, match="'gamma'"):
        kzoo.load_recipe(write_recipe(tmp_path, {**MINIMAL, "optimizer": {"schedule": schedule}}))


def test_schedule_options_get_their_defaults(tmp_path):
    data = {**MINIMAL, "optimizer": {"name": "sgd", "schedule": {"name": "step", "factor": 0.1}}}
    optimizer = kzoo.load_recipe(write_recipe(tmp_path, data)).optimizer
    assert optimizer.schedule == "step"
    assert optimizer.schedule_options == {"every_epochs": SCHEDULES["step"]["every_epochs"][1],
                                          "factor": 0.1}


def test_missing_recipe_file_is_named(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(kzoo.KzooError) as error:
        kzoo.load_recipe(missing)
    assert str(missing) in str(error.value)


def test_unknown_recipe_name_suggests_close_ones():
    with pytest.raises(kzoo.KzooError) as error:
        kzoo.load_recipe("lenet5_mnsit")
    assert "'lenet5_mnist'" in str(error.value)


def test_with_overrides_reaches_optimizer_and_model_options():
    recipe = kzoo.load_recipe("lenet5_mnist")
    changed = recipe.with_overrides(learning_rate=0.25, dropout=0.3, epochs=2, batch_size=None)
    assert changed.optimizer.learning_rate == 0.25
    assert changed.optimizer.name == recipe.optimizer.name
    assert changed.model_options["dropout"] == 0.3
    assert changed.epochs == 2
    assert changed.batch_size == recipe.batch_size  # None: left as it was
    assert recipe.optimizer.learning_rate != 0.25 and "dropout" not in recipe.model_options


def test_with_overrides_validates(tmp_path):
    recipe = kzoo.load_recipe("lenet5_mnist")
    with pytest.raises(kzoo.KzooError, match="'epochs'"):
        recipe.with_overrides(epochs=0)
    with pytest.raises(kzoo.KzooError, match="'colour'"):
        recipe.with_overrides(colour="red")


def test_triangle_schedule_peak_must_be_inside_training(tmp_path):
    recipe = {**MINIMAL, "optimizer": {"name": "sgd", "schedule": {"name": "triangle", "peak": 1.2}}}
    with pytest.raises(kzoo.KzooError, match="'peak' must be in \\(0, 1\\).*1.2"):
        kzoo.load_recipe(write_recipe(tmp_path, recipe))


def test_optimizer_extras_reach_the_keras_optimizer(tmp_path):
    from kzoo.training.optimizers import LayerwiseLearningRates, make_optimizer

    recipe = kzoo.load_recipe(write_recipe(tmp_path, {**MINIMAL, "optimizer": {
        "name": "sgd", "momentum": 0.85, "nesterov": True, "weight_decay": 0.01,
        "lr_multipliers": {"*_bn*/beta": 64}, "schedule": {"name": "triangle"}}}))
    optimizer = make_optimizer(recipe.optimizer, steps_per_epoch=10, epochs=2)
    assert optimizer.nesterov and optimizer.weight_decay == 0.01
    assert isinstance(optimizer, LayerwiseLearningRates)
    assert optimizer.lr_multipliers == {"*_bn*/beta": 64.0}
    assert "Triangle" in str(optimizer.get_config()["learning_rate"])
