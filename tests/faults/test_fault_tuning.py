"""Fault injection into distributed tuning: the chief of a ``kzoo tune --chief`` search killed
with SIGKILL at a random moment of a trial, its worker killed after it, then the same
commands run again (on a new port: the dead chief's can stay taken for a minute, and a chief
started on it says so in one line).

The property: the search started again finishes with every trial run and recorded once, as
the docs promise ("running the same command again resumes the search"); and a worker left
without its chief ends in one line rather than waiting for ever. (A worker killed mid-trial
is tests/tuning/test_tuning_distributed.py's.)"""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import TINY_SOFTMAX_RECIPE, cli_env, free_port, write_mnist_npz

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]

TRIALS = 3


@pytest.fixture
def search(tmp_path) -> list[str]:
    """The command of a small search (a chief or worker role is added to it)."""
    write_mnist_npz(tmp_path / "data")
    recipe = {**TINY_SOFTMAX_RECIPE, "model": "lenet5", "batch_size": 16}
    (tmp_path / "soft.yaml").write_text(yaml.safe_dump(recipe))
    return [sys.executable, "-m", "kzoo", "tune", "soft.yaml", "--max-trials", str(TRIALS),
            "--data-dir", "data", "--directory", "shared", "--quiet"]


def _start(command: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=cwd, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _wait_for(process: subprocess.Popen, text: str, timeout: float = 180) -> None:
    deadline, lines = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if text in line:
            return
    raise AssertionError(f"no line with {text!r} in:\n{''.join(lines)}")


def _kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)


def _chief_killed_in_a_trial(search, cwd, address) -> subprocess.Popen:
    """A chief and its worker; the chief killed at a random moment of the first trial; the
    worker, still running."""
    chance = random.Random(int(os.environ.get("KZOO_FAULT_SEED", "0")))
    chief = _start([*search, "--chief", address, "--worker-timeout", "15"], cwd)
    worker = _start([*search, "--worker", address, "--tuner-id", "w1"], cwd)
    try:
        _wait_for(worker, "w1 runs trial 0")
        time.sleep(chance.uniform(0, 2))
    finally:
        _kill(chief)
    return worker


def test_a_search_whose_chief_was_killed_finishes_every_trial_once_when_run_again(
        search, tmp_path):
    _kill(_chief_killed_in_a_trial(search, tmp_path, f"127.0.0.1:{free_port()}"))
    # on a new port: the killed chief's may stay taken a while (the chief then says so)
    address = f"127.0.0.1:{free_port()}"
    chief = _start([*search, "--chief", address, "--worker-timeout", "15"], tmp_path)
    worker = _start([*search, "--worker", address, "--tuner-id", "w2"], tmp_path)
    try:
        outputs = {name: process.communicate(timeout=240)[0]
                   for name, process in (("w2", worker), ("chief", chief))}
    finally:
        for process in (chief, worker):
            if process.poll() is None:
                _kill(process)
    assert worker.returncode == 0 and chief.returncode == 0, outputs
    assert "Traceback" not in outputs["chief"] + outputs["w2"]
    project = tmp_path / "shared" / "soft-random"
    with open(project / "trials.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    ids = [str(i) for i in range(TRIALS)]
    assert [(row["trial_id"], row["status"]) for row in rows] == [(i, "COMPLETED") for i in ids]
    assert sorted(json.loads((project / "oracle.json").read_text())["end_order"]) == ids
    assert (project / "soft_tuned.yaml").is_file()


@pytest.mark.xfail(reason="a tuning worker whose chief was killed (or never came up) waits "
                   "for it for ever, silent, instead of ending with a one-line error",
                   strict=True)
def test_a_worker_whose_chief_was_killed_ends_in_one_line(search, tmp_path):
    worker = _chief_killed_in_a_trial(search, tmp_path, f"127.0.0.1:{free_port()}")
    try:
        output = worker.communicate(timeout=45)[0]
    except subprocess.TimeoutExpired:
        _kill(worker)
        raise AssertionError("the worker still waits 45 s after its chief died") from None
    assert worker.returncode == 2, output
    errors = [line for line in output.splitlines() if line.startswith("kzoo: error:")]
    assert len(errors) == 1 and "Traceback" not in output, output
