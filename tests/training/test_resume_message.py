"""A bare ``--resume`` that finds nothing under runs/ says how to resume a run kept elsewhere."""

from __future__ import annotations

import pytest

from kzoo.errors import KzooError
from kzoo.recipes.recipe import recipe_from_dict
from kzoo.training.run import choose_run_dir, start_run_dir

RECIPE = recipe_from_dict("tiny", {"model": "softmax_regression", "dataset": "mnist"}, "test")


def test_a_bare_resume_after_a_run_with_its_own_run_dir_says_to_pass_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    start_run_dir(RECIPE, tmp_path / "experiments" / "first", "train", None, ["a", "b"])
    with pytest.raises(KzooError) as raised:
        choose_run_dir(RECIPE, None, resume=True)
    message = str(raised.value)
    assert "\n" not in message
    assert "no unfinished run of 'tiny' under runs/" in message
    assert "a run started with --run-dir DIR is resumed with the same --run-dir DIR" in message
    # and given that directory, it resumes
    assert choose_run_dir(RECIPE, tmp_path / "experiments" / "first", resume=True) == (
        tmp_path / "experiments" / "first")
