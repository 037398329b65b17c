"""Fuzzing recipes: random mutations of every shipped YAML in zoo_configs/ are loaded or
refused in one line (a :class:`KzooError`), never another exception; what is accepted is a
recipe that holds together (finite numbers, and it reads back as itself).

Each failure the properties found is also pinned as a plain case below them, so the record of
what is still wrong does not depend on the random search finding it again."""

from __future__ import annotations

import copy
import math

import pytest
import yaml
from hypothesis import assume, example, given
from strategies import (
    MINIMAL,
    SHIPPED,
    bounded,
    known_failure,
    mutated_recipes,
    one_line,
    recipe_files,
)

from kzoo.errors import KzooError
from kzoo.recipes.recipe import recipe_from_dict
from kzoo.recipes.zoo import load_recipe


def _load(name, data):
    """The recipe, or None where it was refused in one line; any other outcome fails."""
    try:
        return recipe_from_dict(name, data, source=f"{name}.yaml")
    except KzooError as error:
        assert one_line(str(error)), repr(str(error))
        return None


def _load_file(path):
    try:
        return load_recipe(path)
    except KzooError as error:
        assert one_line(str(error)), repr(str(error))
        return None


def _floats(value):
    """Every float in a recipe's mapping, nested mappings and lists included."""
    if isinstance(value, float):
        yield value
    elif isinstance(value, dict):
        for inner in value.values():
            yield from _floats(inner)
    elif isinstance(value, (list, tuple)):
        for inner in value:
            yield from _floats(inner)


def _holds_together(name, recipe):
    as_dict = recipe.to_dict()
    as_dict.pop("model_options", None)  # the model's builder checks its own options
    assert all(math.isfinite(number) for number in _floats(as_dict)), as_dict
    assert recipe_from_dict(name, recipe.to_dict(), source=f"{name}.yaml") == recipe


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_shipped_recipe_loads_and_reads_back_as_itself(name):
    recipe = _load(name, copy.deepcopy(SHIPPED[name]))
    assert recipe is not None
    _holds_together(name, recipe)


# --- the properties -----------------------------------------------------------------------------


@bounded(300)
@given(mutated_recipes())
def test_a_mutated_recipe_loads_or_is_refused_in_one_line(case):
    _load(*case)


@bounded(300)
@given(mutated_recipes())
@example(("lenet5_mnist", {**MINIMAL, "optimizer": {"learning_rate": math.nan}}))
def test_an_accepted_recipe_holds_only_finite_numbers_and_reads_back_as_itself(case):
    name, data = case
    try:
        recipe = _load(name, data)
    except TypeError:  # the crash the property above records
        return
    if recipe is not None:
        _holds_together(name, recipe)


def _write(tmp_path_factory, name, text):
    path = tmp_path_factory.mktemp("recipe") / f"{name}.yaml"
    path.write_bytes(text)
    return path


@bounded(150)
@given(recipe_files())
def test_a_mutated_recipe_file_loads_or_is_refused_in_one_line(tmp_path_factory, case):
    """Through the file a user edits, read by load_recipe as ``kzoo train PATH`` reads it."""
    try:
        _load_file(_write(tmp_path_factory, *case))
    except TypeError:  # the crash the first property records
        pass


@bounded(300)
@given(mutated_recipes())
def test_beyond_what_was_found_a_mutated_recipe_loads_whole_or_is_refused_in_one_line(case):
    """The two properties above, over the cases that hold none of their known failures: so
    the search for the next failure goes on while those are recorded."""
    name, data = case
    assume(not known_failure(data))
    recipe = _load(name, data)
    if recipe is not None:
        _holds_together(name, recipe)


@bounded(150)
@given(recipe_files())
def test_beyond_what_was_found_a_mutated_recipe_file_loads_or_is_refused_in_one_line(
        tmp_path_factory, case):
    name, text = case
    try:
        parsed = yaml.safe_load(text.decode("utf-8"))
    except UnicodeDecodeError:  # refused in one line since found
        parsed = None
    except yaml.YAMLError:
        parsed = math.nan
    assume(not known_failure(parsed))
    _load_file(_write(tmp_path_factory, name, text))


# --- what the properties found, one case each ----------------------------------------------------

FOUND = {
    "integer key": {**MINIMAL, 1: 2},
    "null optimizer key": {**MINIMAL, "optimizer": {None: 2}},
    "schedule name a list": {**MINIMAL, "optimizer": {"schedule": {"name": ["cosine"]}}},
    "schedule name a mapping": {**MINIMAL, "optimizer": {"schedule": {"name": {"a": 1}}}},
    "NaN learning rate": {**MINIMAL, "optimizer": {"learning_rate": math.nan}},
    "NaN validation split": {**MINIMAL, "validation_split": math.nan},
    "infinite weight decay": {**MINIMAL, "optimizer": {"weight_decay": math.inf}},
    "NaN lr multiplier": {**MINIMAL, "optimizer": {"lr_multipliers": {"a*": math.nan}}},
    "NaN center crop": {**MINIMAL, "finetune": {"center_crop": math.nan}},
    "infinite decay epochs": {**MINIMAL, "optimizer": {
        "schedule": {"name": "exponential", "decay_epochs": math.inf}}},
}


@pytest.mark.parametrize("case", sorted(FOUND))
def test_what_the_fuzzer_found_is_refused_in_one_line(case):
    with pytest.raises(KzooError) as refused:
        recipe_from_dict("found", copy.deepcopy(FOUND[case]), source="found.yaml")
    assert one_line(str(refused.value))


@pytest.mark.parametrize("text", [
    pytest.param(b"model: lenet5\ndataset: mnist\ndescription: caf\xe9\n", id="latin-1 byte"),
    pytest.param(b"model: [lenet5\ndataset: mnist\n", id="unclosed bracket"),
])
def test_a_damaged_recipe_file_is_refused_in_one_line(tmp_path, text):
    path = tmp_path / "damaged.yaml"
    path.write_bytes(text)
    with pytest.raises(KzooError) as refused:
        load_recipe(path)
    assert one_line(str(refused.value)), str(refused.value)
