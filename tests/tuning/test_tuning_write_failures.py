"""A search that cannot write its files (a full disk, a read-only folder) stops with one line,
and never leaves KerasTuner's oracle lock held: a chief's other threads, serving its workers,
would otherwise wait on it forever.

Each search runs in a thread with a time limit, so a regression fails instead of hanging."""

from __future__ import annotations

import errno
import threading

import pytest
import yaml
from conftest import TINY_SOFTMAX_RECIPE

import kzoo
from kzoo.tuning import oracles
from kzoo.tuning.oracles import SearchStopped


def _in_thread(function, timeout: float) -> dict:
    """``function()`` run in its own thread: ``{"result": ...}`` or ``{"error": ...}``; fails
    the test if it has not returned after ``timeout`` seconds."""
    outcome: dict = {}

    def target():
        try:
            outcome["result"] = function()
        except BaseException as error:  # noqa: BLE001 - handed to the test
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"still waiting after {timeout:.0f}s: the oracle's lock is held"
    return outcome


def _full_disk(path: str = "trials.csv") -> OSError:
    return OSError(errno.ENOSPC, "No space left on device", path)


@pytest.mark.slow
@pytest.mark.parametrize("failing", ["trials table", "trial state"])
def test_a_failed_write_stops_the_search_in_one_line_and_releases_the_oracle(
        tmp_path, mnist_dir, monkeypatch, failing):
    seen = []
    if failing == "trials table":  # written at each trial's end
        def write_trials_table(oracle, path):
            seen.append(oracle)
            raise _full_disk(str(path))

        monkeypatch.setattr(oracles, "write_trials_table", write_trials_table)
    else:  # the oracle's state, saved when it hands out a trial
        save = oracles.RandomSearchOracle.save

        def failing_save(oracle):
            seen.append(oracle)
            if oracle.launches:
                raise _full_disk()
            save(oracle)

        monkeypatch.setattr(oracles.RandomSearchOracle, "save", failing_save)
    recipe = tmp_path / "softmax.yaml"
    recipe.write_text(yaml.safe_dump(TINY_SOFTMAX_RECIPE))
    outcome = _in_thread(lambda: kzoo.tune(recipe, max_trials=2, data_dir=mnist_dir,
                                           run_dir=tmp_path / "tuning", verbose=0), timeout=300)

    error = outcome.get("error")
    assert isinstance(error, SearchStopped), outcome
    message = str(error)
    assert "\n" not in message
    assert "could not write its files in" in message and "No space left on device" in message
    assert "run the same command again" in message
    # another thread (a chief's, serving a worker) still gets an answer: the search is over
    oracle = seen[-1]
    asked = _in_thread(lambda: oracle.create_trial("tuner1"), timeout=30)
    assert asked["result"].status == "STOPPED"
