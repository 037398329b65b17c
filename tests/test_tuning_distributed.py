"""KerasTuner's chief/worker mode through ``kzoo tune --chief`` / ``--worker``: real processes
on the loopback interface, sharing one search directory."""

from __future__ import annotations

import csv
import json
import re
import socket
import subprocess
import sys

import yaml
from conftest import TINY_SOFTMAX_RECIPE, cli_env

import kzoo

RECIPE = TINY_SOFTMAX_RECIPE
TRIALS = 6


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def read_table(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_chief_and_two_workers_run_every_trial_exactly_once(tmp_path, mnist_dir):
    recipe = tmp_path / "soft.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    address = f"127.0.0.1:{free_port()}"
    common = [sys.executable, "-m", "kzoo", "tune", str(recipe), "--max-trials", str(TRIALS),
              "--data-dir", str(mnist_dir), "--directory", "shared", "--quiet"]
    roles = {"chief": ["--chief", address],
             "worker1": ["--worker", address, "--tuner-id", "worker1"],
             "worker2": ["--worker", address, "--tuner-id", "worker2"]}
    processes, outputs = {}, {}
    try:
        for name, role in roles.items():
            processes[name] = subprocess.Popen(
                common + role, cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True)
        for name in ("worker1", "worker2"):
            outputs[name] = processes[name].communicate(timeout=180)[0]
        # The same search in one process, while the chief waits out KerasTuner's exit check
        # (it looks every 20 s for workers still busy).
        single = kzoo.tune(recipe, max_trials=TRIALS, data_dir=mnist_dir,
                           directory=tmp_path / "single", verbose=0)
        outputs["chief"] = processes["chief"].communicate(timeout=90)[0]
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    for name, process in processes.items():
        assert process.returncode == 0, f"{name}:\n{outputs.get(name)}"

    ran = {name: re.findall(r"runs trial (\w+):", outputs[name]) for name in ("worker1", "worker2")}
    assert sorted(ran["worker1"] + ran["worker2"]) == [str(i) for i in range(TRIALS)]
    assert ran["worker1"] and ran["worker2"], ran  # both took part
    assert "runs trial" not in outputs["chief"]  # the chief only hands trials out

    project = tmp_path / "shared" / "soft-random"
    rows = read_table(project / "trials.csv")
    assert [row["trial_id"] for row in rows] == [str(i) for i in range(TRIALS)]
    assert {row["status"] for row in rows} == {"COMPLETED"}
    assert sorted(json.loads((project / "oracle.json").read_text())["end_order"]) == [
        str(i) for i in range(TRIALS)]  # each trial's result recorded once
    assert "best val_accuracy" in outputs["chief"] and (project / "soft_tuned.yaml").is_file()

    single_rows = read_table(single.directory / "trials.csv")
    assert len(single_rows) == len(rows) == TRIALS
    values = [(row["learning_rate"], row["batch_size"]) for row in rows]
    assert values == [(row["learning_rate"], row["batch_size"]) for row in single_rows]
