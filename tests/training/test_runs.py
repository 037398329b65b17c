"""The run layer: which run ``--resume`` picks, and what it refuses."""

from __future__ import annotations

import json
import os
import time

import pytest

from kzoo.errors import KzooError
from kzoo.recipes.recipe import recipe_from_dict
from kzoo.training.run import choose_run_dir, latest_unfinished_run, start_run_dir

RECIPE = recipe_from_dict("tiny", {"model": "softmax_regression", "dataset": "mnist"}, "test")


def make_run(root, name, finished, age_s, data_dir=None):
    run_dir = root / name
    start_run_dir(RECIPE, run_dir, "train", data_dir, ["a", "b"])
    if finished:
        (run_dir / "metrics.json").write_text(json.dumps({"status": "completed"}))
    stamp = time.time() - age_s
    os.utime(run_dir, (stamp, stamp))
    return run_dir


def test_resume_without_a_run_dir_picks_the_latest_unfinished_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs"
    make_run(runs, "tiny-1", finished=False, age_s=300)
    wanted = make_run(runs, "tiny-2", finished=False, age_s=200)
    make_run(runs, "tiny-3", finished=True, age_s=100)  # newer, but finished
    assert latest_unfinished_run("tiny", runs) == wanted
    assert choose_run_dir(RECIPE, None, resume=True) == wanted.relative_to(tmp_path)


def test_resume_refuses_other_data_and_other_settings(tmp_path):
    run_dir = make_run(tmp_path, "tiny-1", finished=False, age_s=0, data_dir=tmp_path)
    other = tmp_path / "elsewhere"
    other.mkdir()
    with pytest.raises(KzooError, match="started with --data-dir"):
        choose_run_dir(RECIPE, run_dir, resume=True, data_dir=other)
    assert choose_run_dir(RECIPE, run_dir, resume=True, data_dir=tmp_path) == run_dir
    changed = RECIPE.with_overrides(epochs=3)
    with pytest.raises(KzooError, match=r"different settings \(epochs\)"):
        choose_run_dir(changed, run_dir, resume=True, data_dir=tmp_path)
    with pytest.raises(KzooError, match="nothing to resume"):
        choose_run_dir(recipe_from_dict("other", {"model": "mlp", "dataset": "mnist"}, "t"),
                       None, resume=True)
