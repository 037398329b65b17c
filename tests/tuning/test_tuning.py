"""``kzoo tune``: the search space, the hypermodel, KerasTuner's algorithms, results, failures
and resuming.

Searches run in-process on a tiny synthetic ``mnist.npz`` (270 training images) for one or two
epochs; killing a search mid-trial and resuming it is checked on a real ``python -m kzoo``
process. The chief/worker mode has its own file, ``test_tuning_distributed.py``.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import yaml
from conftest import TINY_SOFTMAX_RECIPE, cli_env

import kzoo
from kzoo.cli.main import main
from kzoo.errors import KzooError
from kzoo.recipes.search import SearchRange, parse_search_entry, parse_search_option
from kzoo.recipes.zoo import load_recipe
from kzoo.training.train import load_splits
from kzoo.tuning import (
    RecipeHyperModel,
    custom_gradients,
    distributed_role,
    make_tuner,
    search_space,
)
from kzoo.tuning.table import SETTINGS_HP

SOFTMAX = TINY_SOFTMAX_RECIPE
LENET = {
    "model": "lenet5",
    "dataset": "mnist",
    "model_options": {"dropout": 0.2},
    "optimizer": {"name": "adam", "learning_rate": 0.002},
    "batch_size": 64,
    "epochs": 1,
}


def write_recipe(folder, name, data):
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def read_table(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# --- the search space -------------------------------------------------------------------------


def test_default_space_is_learning_rate_batch_size_and_dropout_around_the_recipe(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path, "lenet", LENET))
    space = {t.name: t for t in search_space(recipe, train_size=300)}
    assert list(space) == ["learning_rate", "batch_size", "dropout"]
    rate = space["learning_rate"]
    assert (rate.entry.min, rate.entry.max, rate.entry.sampling) == (0.0002, 0.02, "log")
    assert space["batch_size"].entry.values == (16, 32, 64, 128, 256)  # no batch over 300
    assert (space["dropout"].entry.min, space["dropout"].entry.max) == (0.0, 0.6)
    assert {name: t.recipe_value for name, t in space.items()} == {
        "learning_rate": 0.002, "batch_size": 64, "dropout": 0.2}
    # A model without a dropout option is searched without one.
    softmax = load_recipe(write_recipe(tmp_path, "softmax", SOFTMAX))
    assert [t.name for t in search_space(softmax)] == ["learning_rate", "batch_size"]


def test_search_section_and_command_line_narrow_widen_and_extend(tmp_path):
    data = {**LENET, "model": "mlp", "model_options": {"hidden_units": 64, "dropout": 0.0},
            "search": {"learning_rate": {"max": 1.0},  # widen: min and log scale kept
                       "batch_size": {"values": [32, 64]},  # narrow
                       "hidden_units": {"values": [32, 64, 128]},  # extend: a model option
                       "dropout": False}}  # not searched
    recipe = load_recipe(write_recipe(tmp_path, "mlp", data))
    space = {t.name: t.entry for t in search_space(recipe)}
    assert space == {
        "learning_rate": SearchRange(min=0.0002, max=1.0, sampling="log"),
        "batch_size": SearchRange(values=(32, 64)),
        "hidden_units": SearchRange(values=(32, 64, 128)),
    }
    overrides = dict(map(parse_search_option, ["learning_rate=1e-3:0.1", "dropout=0:0.5:0.1",
                                               "hidden_units=off"]))
    space = {t.name: t.entry for t in search_space(recipe, overrides)}
    assert space["learning_rate"] == SearchRange(min=0.001, max=0.1, sampling="log")
    assert space["dropout"] == SearchRange(min=0.0, max=0.5, step=0.1)
    assert "hidden_units" not in space


@pytest.mark.parametrize("search, train_size, fragments", [
    ({"lerning_rate": "1e-3:1e-1"}, None,
     ["unknown hyperparameter 'lerning_rate'", "did you mean 'learning_rate'", "batch_size",
      "dropout", "pooling"]),
    ({"learning_rate": "0.1:0.001"}, None, ["inverted", "min < max"]),
    ({"dropout": "0.3:0.3"}, None, ["empty", "values: [0.3]"]),
    ({"batch_size": {"values": []}}, None, ["values [] is empty"]),
    ({"learning_rate": "1e-2:1e-1"}, None, ["recipe's own learning_rate (0.002)", "outside"]),
    ({"batch_size": "64,512"}, 270, ["batch_size 512", "270 training examples"]),
    ({"dropout": "0:1.5"}, None, ["dropout=1.5", "in [0, 1)"]),
    ({"batch_size": "32,64.5"}, None, ["64.5", "whole numbers"]),
    ({"activation": "relu:tanh"}, None, ["min must be a number"]),
    ({"momentum": "0:0.9"}, None, ["adam, which takes no momentum"]),
])
def test_bad_search_input_names_the_value_and_the_fix(tmp_path, search, train_size, fragments):
    recipe = load_recipe(write_recipe(tmp_path, "lenet", LENET))
    with pytest.raises(KzooError) as error:
        overrides = {name: parse_search_entry(name, entry, "test")
                     for name, entry in search.items()}
        search_space(recipe, overrides, train_size=train_size)
    for fragment in fragments:
        assert fragment in str(error.value)


def test_bad_search_section_in_yaml_is_an_error_naming_the_key(tmp_path):
    path = write_recipe(tmp_path, "bad", {**LENET, "search": {"dropout": {"mni": 0.0}}})
    with pytest.raises(KzooError, match="unknown key 'mni' .did you mean 'min'"):
        load_recipe(path)


def test_batch_size_larger_than_the_dataset_fails_before_any_trial(tmp_path, mnist_dir):
    path = write_recipe(tmp_path, "softmax", SOFTMAX)
    with pytest.raises(KzooError, match="batch_size 2000 is larger than the 270 training"):
        kzoo.tune(path, search={"batch_size": "32,2000"}, data_dir=mnist_dir,
                  run_dir=tmp_path / "tuning")
    assert not (tmp_path / "tuning").exists()


def test_cli_reports_bad_search_as_one_line(tmp_path, capsys):
    path = write_recipe(tmp_path, "softmax", SOFTMAX)
    assert main(["tune", str(path), "--search", "lerning_rate=1e-3:1e-1"]) == 2
    assert "kzoo: error: unknown hyperparameter 'lerning_rate'" in capsys.readouterr().err
    assert main(["tune", str(path), "--search", "learning_rate"]) == 2
    assert "is not NAME=SPEC" in capsys.readouterr().err


# --- searches -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_random_search_starts_from_the_recipe_and_leaves_usable_results(tmp_path, mnist_dir,
                                                                       monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_recipe(tmp_path, "lenet", LENET)
    result = kzoo.tune(path, max_trials=3, data_dir=mnist_dir, retrain_best=True, verbose=0)

    rows = read_table(result.directory / "trials.csv")
    assert [row["trial_id"] for row in rows] == ["0", "1", "2"]
    assert {row["status"] for row in rows} == {"COMPLETED"}
    assert list(rows[0])[:5] == ["trial_id", "status", "learning_rate", "batch_size", "dropout"]
    assert (rows[0]["learning_rate"], rows[0]["batch_size"], rows[0]["dropout"]) == (
        "0.002", "64", "0.2")  # trial 0 is the recipe
    assert all(float(row["wall_time_s"]) > 0 and row["best_epoch"] == "1" for row in rows)
    assert len({(row["learning_rate"], row["batch_size"], row["dropout"]) for row in rows}) == 3

    best = max(rows, key=lambda row: float(row["val_accuracy"]))
    assert result.best_score == pytest.approx(float(best["val_accuracy"]), abs=1e-6)
    tuned = load_recipe(result.directory / "lenet_tuned.yaml")
    assert tuned == result.best_recipe
    assert tuned.optimizer.learning_rate == pytest.approx(float(best["learning_rate"]), rel=1e-5)
    assert tuned.batch_size == int(best["batch_size"]) and tuned.search == {}
    assert "Results summary" in (result.directory / "summary.txt").read_text()

    run = result.run  # --retrain-best: on train+validation, saved as `kzoo train` saves
    assert run.run_dir.parent.name == "runs" and run.run_dir.name.startswith("lenet_tuned-")
    assert (run.run_dir / "model.keras").is_file()
    assert json.loads((run.run_dir / "metrics.json").read_text())["status"] == "completed"
    assert "val_loss" not in run.history and run.history["loss"]


@pytest.mark.slow
def test_hyperband_continues_its_best_trial(tmp_path, mnist_dir):
    path = write_recipe(tmp_path, "softmax", {**SOFTMAX, "epochs": 2})
    gradients = len(custom_gradients())
    result = kzoo.tune(path, algorithm="hyperband", hyperband_factor=2, max_trials=3,
                       data_dir=mnist_dir, run_dir=tmp_path / "tuning", verbose=0)
    rows = read_table(result.directory / "trials.csv")
    assert [(row["epochs"], row["initial_epoch"]) for row in rows] == [
        ("1", "0"), ("1", "0"), ("2", "1")]
    assert (rows[0]["learning_rate"], rows[0]["batch_size"]) == ("0.1", "32")
    continued = rows[int(rows[2]["continues_trial"])]
    assert rows[2]["learning_rate"] == continued["learning_rate"]
    assert (rows[2]["epochs_trained"], rows[2]["best_epoch"]) == ("1", "2")
    assert result.best_recipe.epochs == int(max(rows, key=lambda r: float(r["val_accuracy"]))
                                            ["epochs"])
    assert len(custom_gradients()) == gradients  # no trial's graph is kept alive by TensorFlow


@pytest.mark.slow
def test_bayesian_search_starts_from_the_recipe(tmp_path, mnist_dir):
    pytest.importorskip("sklearn")
    path = write_recipe(tmp_path, "softmax", SOFTMAX)
    result = kzoo.tune(path, algorithm="bayesian", max_trials=2, data_dir=mnist_dir,
                       run_dir=tmp_path / "tuning", verbose=0)
    first = result.trials[0]
    assert (first["trial_id"], first["learning_rate"], first["batch_size"]) == ("0", 0.1, 32)
    assert len(result.trials) == 2


# --- failures -----------------------------------------------------------------------------------

NAN_RECIPE = {**SOFTMAX, "optimizer": {"name": "adam", "learning_rate": 0.01},
              "search": {"batch_size": False}}


@pytest.mark.slow
def test_failed_trial_is_recorded_and_the_search_goes_on(tmp_path, mnist_dir):
    path = write_recipe(tmp_path, "nan", NAN_RECIPE)
    result = kzoo.tune(path, max_trials=3, search={"learning_rate": "0.01,1e36"},
                       data_dir=mnist_dir, run_dir=tmp_path / "tuning", verbose=0)
    rows = read_table(result.directory / "trials.csv")
    assert [(row["learning_rate"], row["status"]) for row in rows] == [
        ("0.01", "COMPLETED"), ("1e+36", "FAILED")]  # then the space is exhausted
    assert rows[1]["message"].startswith("the loss became NaN in epoch 1 with learning_rate=1e+36")
    assert result.best_hyperparameters == {"learning_rate": 0.01}


@pytest.mark.slow
def test_repeated_failures_stop_the_search_with_a_clear_message(tmp_path, mnist_dir):
    path = write_recipe(tmp_path, "nan", {**NAN_RECIPE, "optimizer": {"name": "adam",
                                                                     "learning_rate": 1e36}})
    with pytest.raises(KzooError) as error:
        kzoo.tune(path, max_trials=4, max_failures=2, search={"learning_rate": "1e36,1e37,1e38"},
                  data_dir=mnist_dir, run_dir=tmp_path / "tuning", verbose=0)
    message = str(error.value)
    assert "2 trials in a row failed" in message and "--max-failures" in message
    assert "the loss became NaN" in message
    rows = read_table(tmp_path / "tuning" / "nan-random" / "trials.csv")
    assert [row["status"] for row in rows] == ["FAILED", "FAILED"]


# --- resuming -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_same_call_resumes_more_trials_extend_other_settings_refuse(tmp_path, mnist_dir, capsys):
    path = write_recipe(tmp_path, "softmax", SOFTMAX)
    options = {"data_dir": mnist_dir, "run_dir": tmp_path / "tuning", "verbose": 0}
    first = kzoo.tune(path, max_trials=2, **options)
    capsys.readouterr()
    again = kzoo.tune(path, max_trials=2, **options)
    assert "runs trial" not in capsys.readouterr().out  # finished: nothing reruns
    assert again.trials == first.trials
    more = kzoo.tune(path, max_trials=3, **options)  # a higher --max-trials extends the search
    ran = [line for line in capsys.readouterr().out.splitlines() if "runs trial" in line]
    assert len(ran) == 1 and ran[0].startswith("kzoo: tuner0 runs trial 2: learning_rate=")
    assert more.trials[:2] == first.trials and len(more.trials) == 3
    with pytest.raises(KzooError, match=r"other settings \(recipe.epochs\).*--overwrite"):
        kzoo.tune(path, max_trials=3, epochs=2, **options)
    fresh = kzoo.tune(path, max_trials=1, epochs=2, overwrite=True, **options)
    assert [row["trial_id"] for row in fresh.trials] == ["0"]


def test_the_settings_digest_identifies_trials_but_is_never_shown(tmp_path, mnist_dir, capsys):
    path = write_recipe(tmp_path, "softmax", SOFTMAX)
    result = kzoo.tune(path, max_trials=1, data_dir=mnist_dir, run_dir=tmp_path / "tuning",
                       verbose=1)
    out = capsys.readouterr().out
    assert "Best Value So Far" in out and "Results summary" in out  # KerasTuner's tables
    assert re.search(r"\|learning_rate\n", out) and "learning_rate: 0.1" in out
    assert SETTINGS_HP not in out
    assert SETTINGS_HP not in (result.directory / "summary.txt").read_text()
    trial = result.tuner.oracle.trials[result.trials[0]["trial_id"]]
    assert SETTINGS_HP in trial.hyperparameters.values  # workers check the chief's through it


def test_a_trial_whose_process_died_twice_is_marked_failed_not_rerun(tmp_path, mnist_dir):
    recipe = load_recipe(write_recipe(tmp_path, "softmax", SOFTMAX))
    splits = load_splits(recipe, mnist_dir)
    hypermodel = RecipeHyperModel(recipe, search_space(recipe, train_size=270), splits)

    def start_again():  # what `kzoo tune` does when run (again) in the same directory
        tuner = make_tuner(hypermodel, max_trials=3, epochs=1, directory=tmp_path,
                           project_name="search")
        tuner.save()
        return tuner.oracle

    first = start_again().create_trial("tuner0")  # ... and the process dies in the trial
    assert start_again().create_trial("tuner0").trial_id == first.trial_id  # dies again
    oracle = start_again()
    assert oracle.trials[first.trial_id].status == "FAILED"
    assert "died 2 times" in oracle.trials[first.trial_id].message
    assert oracle.create_trial("tuner0").trial_id != first.trial_id
    rows = read_table(tmp_path / "search" / "trials.csv")
    assert (rows[0]["trial_id"], rows[0]["status"]) == (first.trial_id, "FAILED")


def _trial_status(path):
    try:
        return json.loads(path.read_text())["status"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return None


@pytest.mark.slow
def test_search_killed_mid_trial_resumes_without_losing_or_repeating_a_trial(tmp_path, mnist_dir):
    path = write_recipe(tmp_path, "softmax", {**SOFTMAX, "epochs": 2})
    command = [sys.executable, "-m", "kzoo", "tune", str(path), "--max-trials", "4",
               "--data-dir", str(mnist_dir), "--quiet"]
    project = tmp_path / "tuning" / "softmax-random"
    process = subprocess.Popen(command, cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while _trial_status(project / "trial_1" / "trial.json") != "RUNNING":
            assert process.poll() is None, process.communicate()[0]
            assert time.monotonic() < deadline, "trial 1 never started"
            time.sleep(0.05)
        time.sleep(0.3)  # into trial 1's build and training
        process.send_signal(signal.SIGKILL)
        first_output = process.communicate(timeout=30)[0]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL
    assert "runs trial 1" in first_output and "runs trial 2" not in first_output
    killed_values = json.loads((project / "trial_1" / "trial.json").read_text())
    assert _trial_status(project / "trial_0" / "trial.json") == "COMPLETED"

    resumed = subprocess.run(command, cwd=tmp_path, env=cli_env(), capture_output=True,
                             text=True, timeout=180, check=False)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    ran = re.findall(r"runs trial (\w+):", resumed.stdout)
    assert ran == ["1", "2", "3"]  # the killed trial once more, the finished one never
    rows = read_table(project / "trials.csv")
    assert [row["trial_id"] for row in rows] == ["0", "1", "2", "3"]
    assert {row["status"] for row in rows} == {"COMPLETED"}
    final_values = json.loads((project / "trial_1" / "trial.json").read_text())
    assert final_values["hyperparameters"]["values"] == killed_values["hyperparameters"]["values"]


# --- distributed settings ---------------------------------------------------------------------


def test_distributed_role_sets_and_restores_keras_tuner_variables(monkeypatch):
    for key in ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"):
        monkeypatch.delenv(key, raising=False)
    with distributed_role() as role:
        assert role == "single"
    with distributed_role(worker="127.0.0.1:8123", tuner_id="w7") as role:
        assert role == "worker"
        assert (os.environ["KERASTUNER_TUNER_ID"], os.environ["KERASTUNER_ORACLE_IP"],
                os.environ["KERASTUNER_ORACLE_PORT"]) == ("w7", "127.0.0.1", "8123")
    assert "KERASTUNER_ORACLE_IP" not in os.environ

    def enter(**role):
        with distributed_role(**role):
            pass

    with pytest.raises(KzooError, match="not HOST:PORT"):
        enter(chief="127.0.0.1")
    with pytest.raises(KzooError, match="contains 'chief'"):
        enter(worker="127.0.0.1:8123", tuner_id="chief2")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(KzooError, match=f"cannot listen on 127.0.0.1:{port}"):
            enter(chief=f"127.0.0.1:{port}")
    assert "KERASTUNER_TUNER_ID" not in os.environ
