"""KerasTuner's chief/worker mode through ``kzoo tune --chief`` / ``--worker``: real processes
on the loopback interface, sharing one search directory."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys

import pytest
import yaml
from conftest import TINY_SOFTMAX_RECIPE, cli_env, free_port

import kzoo

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]

RECIPE = TINY_SOFTMAX_RECIPE
TRIALS = 6


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
                           run_dir=tmp_path / "single", verbose=0)
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


# --- failures: a worker that dies, a search that stops, a worker that does not match ------------


def start(command, cwd):
    return subprocess.Popen(command, cwd=cwd, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def wait_for_line(process, pattern, timeout=120):
    """Read ``process``'s output until a line matches; all lines read so far."""
    import time

    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if re.search(pattern, line):
            return lines
    raise AssertionError(f"no line matching {pattern!r} in:\n{''.join(lines)}")


def finish(processes, timeout=240):
    outputs = {}
    try:
        for name, process in processes.items():
            outputs[name] = process.communicate(timeout=timeout)[0]
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    return outputs


LENET = {**RECIPE, "model": "lenet5", "epochs": 3, "batch_size": 16,
         "optimizer": {"name": "adam", "learning_rate": 0.001}}


def test_a_worker_killed_mid_trial_loses_its_trial_and_the_search_finishes(tmp_path, mnist_dir):
    import signal
    import time

    recipe = tmp_path / "lenet.yaml"
    recipe.write_text(yaml.safe_dump(LENET))
    address = f"127.0.0.1:{free_port()}"
    common = [sys.executable, "-m", "kzoo", "tune", str(recipe), "--max-trials", "3",
              "--data-dir", str(mnist_dir), "--directory", "shared", "--quiet"]
    started = time.monotonic()
    chief = start(common + ["--chief", address, "--worker-timeout", "15"], tmp_path)
    doomed = start(common + ["--worker", address, "--tuner-id", "w1"], tmp_path)
    wait_for_line(doomed, r"w1 runs trial 0")
    doomed.send_signal(signal.SIGKILL)  # for good: it never comes back
    doomed.wait()
    survivor = start(common + ["--worker", address, "--tuner-id", "w2"], tmp_path)
    outputs = finish({"w2": survivor, "chief": chief})
    assert survivor.returncode == 0 and chief.returncode == 0, outputs
    assert time.monotonic() - started < 240  # bounded: no wait for w1 forever
    assert "w1 has been silent" in outputs["chief"] and "trial 0 goes to another worker" in (
        outputs["chief"])
    assert sorted(re.findall(r"w2 runs trial (\w+):", outputs["w2"])) == ["0", "1", "2"]
    project = tmp_path / "shared" / "lenet-random"
    rows = read_table(project / "trials.csv")
    assert [(row["trial_id"], row["status"]) for row in rows] == [
        ("0", "COMPLETED"), ("1", "COMPLETED"), ("2", "COMPLETED")]
    end_order = json.loads((project / "oracle.json").read_text())["end_order"]
    assert sorted(end_order) == ["0", "1", "2"]  # no finished trial ran twice


def test_a_search_stopped_by_failures_ends_the_chief_and_its_workers(tmp_path, mnist_dir):
    recipe = tmp_path / "soft.yaml"  # every rate diverges: every trial fails
    recipe.write_text(yaml.safe_dump({**RECIPE, "optimizer": {"name": "sgd",
                                                              "learning_rate": 1e36}}))
    address = f"127.0.0.1:{free_port()}"
    common = [sys.executable, "-m", "kzoo", "tune", str(recipe), "--max-trials", "6",
              "--max-failures", "2", "--search", "learning_rate=1e36,1e37,1e38",
              "--search", "batch_size=off", "--data-dir", str(mnist_dir), "--directory", "shared",
              "--quiet"]
    processes = {"chief": start(common + ["--chief", address], tmp_path),
                 "w1": start(common + ["--worker", address, "--tuner-id", "w1"], tmp_path),
                 "w2": start(common + ["--worker", address, "--tuner-id", "w2"], tmp_path)}
    outputs = finish(processes)
    assert processes["chief"].returncode == 2, outputs["chief"]
    errors = [line for line in outputs["chief"].splitlines() if line.startswith("kzoo: error:")]
    assert len(errors) == 1 and "trials in a row failed" in errors[0], outputs["chief"]
    for name in ("w1", "w2"):
        assert processes[name].returncode == 0, outputs[name]
        assert "the chief ended the search" in outputs[name]


def test_a_worker_with_other_settings_is_refused_naming_the_difference(tmp_path, mnist_dir):
    recipe, other = tmp_path / "soft.yaml", tmp_path / "other.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    other.write_text(yaml.safe_dump({**RECIPE, "optimizer": {"name": "sgd",
                                                             "learning_rate": 0.05}}))
    address = f"127.0.0.1:{free_port()}"

    def command(path, role):
        return [sys.executable, "-m", "kzoo", "tune", str(path), "--project", "search",
                "--max-trials", "2", "--data-dir", str(mnist_dir), "--directory", "shared",
                "--quiet", *role]

    chief = start(command(recipe, ["--chief", address]), tmp_path)
    try:
        wait_for_line(chief, r"search over")
        refused = subprocess.run(command(other, ["--worker", address, "--tuner-id", "odd"]),
                                 cwd=tmp_path, env=cli_env(), capture_output=True, text=True,
                                 timeout=180, check=False)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        errors = [line for line in refused.stderr.splitlines() if line.startswith("kzoo: error:")]
        assert len(errors) == 1 and "not the chief's" in errors[0]
        assert "recipe.optimizer" in errors[0] and "space" in errors[0]
        assert "odd runs trial" not in refused.stdout
        good = subprocess.run(command(recipe, ["--worker", address, "--tuner-id", "good"]),
                              cwd=tmp_path, env=cli_env(), capture_output=True, text=True,
                              timeout=180, check=False)
        assert good.returncode == 0, good.stdout + good.stderr
    finally:
        finish({"chief": chief}, timeout=120)
    assert chief.returncode == 0
