"""The ``kzoo`` command.

Every bad input goes through ``kzoo.cli.main.main`` in-process (fast: no TensorFlow start-up per
case); the entry point itself, a training run, a few representative bad inputs and resuming a
killed run are checked in real ``python -m kzoo`` subprocesses.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from conftest import assert_clean_error, cli_env, run_cli_many, write_mnist_npz

import kzoo
import kzoo.cli.tune
from kzoo.cli.main import main, make_parser

TINY_RECIPE = {
    "description": "softmax regression on a tiny synthetic mnist.npz",
    "model": "softmax_regression",
    "dataset": "mnist",
    "optimizer": {"name": "sgd", "learning_rate": 0.1},
    "batch_size": 32,
    "epochs": 2,
    "seed": 0,
}


@pytest.fixture
def workspace(tmp_path):
    """tmp_path with data/mnist.npz, tiny.yaml (a valid recipe) and typo.yaml (unknown key)."""
    write_mnist_npz(tmp_path / "data", train=300, test=100)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY_RECIPE))
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump({**TINY_RECIPE, "epoch": 3}))
    (tmp_path / "empty").mkdir()
    return tmp_path


def read_epochs(history_csv):
    with history_csv.open() as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


# --- in-process: listing and bad input -----------------------------------------------------------


def run_main(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_list_shows_every_model(capsys):
    code, out, _ = run_main(capsys, "list")
    assert code == 0
    listed = [line.split()[0] for line in out.splitlines() if line.strip()]
    assert listed == kzoo.list_models()


def test_list_with_a_pattern_and_a_tag(capsys):
    code, out, _ = run_main(capsys, "list", "lenet*")
    assert code == 0 and [line.split()[0] for line in out.splitlines()] == ["lenet5"]
    code, out, _ = run_main(capsys, "list", "--tag", "pretrained")
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()] == kzoo.list_models(tag="pretrained")


def test_list_recipes_shows_every_recipe(capsys):
    code, out, _ = run_main(capsys, "list", "--recipes")
    assert code == 0
    listed = [line.split()[0] for line in out.splitlines() if line.strip()]
    assert listed == kzoo.list_recipes()
    lenet = next(line for line in out.splitlines() if line.startswith("lenet5_mnist "))
    assert "lenet5" in lenet.split()[1:] and "mnist" in lenet.split()[1:]


def test_info_describes_a_model(capsys):
    code, out, _ = run_main(capsys, "info", "lenet5")
    assert code == 0
    assert out.startswith("lenet5: ")
    assert f"{kzoo.build('lenet5').count_params():,}" in out
    assert "lenet5_mnist" in out and "LeCun" in out


def test_info_json_is_the_description(capsys):
    code, out, _ = run_main(capsys, "info", "lenet5", "--json")
    assert code == 0
    info = json.loads(out)
    assert info["parameters"] == kzoo.describe("lenet5")["parameters"]
    assert info["num_classes"] == 10


def bad_inputs():
    """(id, argv, fragments the one-line error must contain); paths are relative to the
    workspace fixture, which the test chdirs into."""
    train = ["train", "tiny.yaml", "--data-dir", "data", "--run-dir"]
    return [
        ("unknown-model", ["info", "nosuch"], ["'nosuch'"]),
        ("unknown-recipe", ["train", "lenet5_mnsit"], ["'lenet5_mnist'"]),
        ("unknown-key", ["train", "typo.yaml", "--data-dir", "data"], ["typo.yaml", "'epoch'"]),
        ("epochs-0", [*train, "r1", "--epochs", "0"], ["--epochs", "'0'", "whole number >= 1"]),
        ("lr-nan", [*train, "r1", "--lr", "nan"], ["--lr", "'nan'", "finite number > 0"]),
        ("lr-negative", [*train, "r1", "--lr", "-0.1"], ["--lr", "'-0.1'"]),
        ("lr-infinite", ["finetune", "data", "--lr", "inf"], ["--lr", "'inf'"]),
        ("max-trials-0", ["tune", "tiny.yaml", "--max-trials", "0"], ["--max-trials", "'0'"]),
        ("batch-size-0", ["finetune", "data", "--batch-size", "0"], ["--batch-size", "'0'"]),
        ("batch-too-big", [*train, "r2", "--batch-size", "5000"], ["batch_size=5000"]),
        ("no-such-data-dir", ["train", "tiny.yaml", "--data-dir", "nowhere", "--run-dir", "r3"],
         ["nowhere", "does not exist"]),
        ("offline-no-data", ["train", "tiny.yaml", "--data-dir", "empty", "--run-dir", "r4"],
         ["mnist.npz", "--data-dir"]),
        ("dropout-1.5", ["train", "lenet5_mnist", "--data-dir", "data", "--dropout", "1.5",
                         "--run-dir", "r5"], ["--dropout", "'1.5'", "from 0 to 1"]),
        ("existing-run-dir", [*train, "data"], ["'data'", "--resume"]),
        ("resume-nothing", [*train, "empty", "--resume"], ["empty", "recipe.yaml"]),
        ("nan-loss", [*train, "r6", "--lr", "1e38"], ["NaN", "no good model", "learning rate"]),
    ]


@pytest.mark.parametrize("case, argv, fragments", [
    pytest.param(*case, id=case[0], marks=[pytest.mark.slow] if case[0] == "nan-loss" else [])
    for case in bad_inputs()])  # nan-loss trains until the loss overflows
def test_bad_input_is_one_line_and_exit_2(case, argv, fragments, workspace, monkeypatch, capsys):
    monkeypatch.chdir(workspace)
    code, out, err = run_main(capsys, *argv)
    assert code == 2, out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kzoo: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert sorted(p.name for p in (workspace / "data").iterdir()) == ["mnist.npz"]
    if case != "nan-loss":  # refused before anything was made
        assert not [p for p in workspace.iterdir() if p.name.startswith("r") or p.name == "runs"]


# --- the parser: flags, their help, their defaults ----------------------------------------------


def command_parsers():
    """Each command's name and parser."""
    subparsers = next(action for action in make_parser()._actions
                      if isinstance(action, argparse._SubParsersAction))
    return dict(subparsers.choices)


def flag_help(text, flag):
    """The help of ``flag`` in a printed help page, on one line."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith(flag + " ")
                 or line.strip() == flag or line.lstrip().startswith(flag + ","))
    chunk = [lines[start]]
    for line in lines[start + 1:]:
        if not line.startswith("        ") or line.lstrip().startswith("-"):
            break
        chunk.append(line)
    return " ".join(" ".join(chunk).split())


def test_finetune_help_shows_the_defaults_of_a_bare_finetune(capsys):
    from kzoo.recipes.zoo import DEFAULT_BACKBONE, default_recipe

    code, out, err = run_main(capsys, "finetune", "--help")
    assert code == 0 and err == ""
    recipe = default_recipe("photos", DEFAULT_BACKBONE)
    assert (recipe.finetune.head_epochs, recipe.epochs) == (30, 4)
    assert flag_help(out, "--head-epochs").endswith("(default: 30)")
    assert flag_help(out, "--epochs").endswith("(default: 4)")
    assert flag_help(out, "--backbone").endswith(f"(default: {DEFAULT_BACKBONE})")
    assert flag_help(out, "--learning-rate").endswith("(default: 3e-05)")
    assert flag_help(out, "--batch-size").endswith("(default: 32)")
    assert flag_help(out, "--center-crop").endswith("(default: 0.875)")
    assert "--head-lr" in out and "--lr" in out  # the short spellings still work


def test_train_and_audit_help_state_their_real_defaults(capsys):
    from kzoo.analysis.labels import find_label_issues
    from kzoo.cli.flags import parameter_default

    code, out, _ = run_main(capsys, "train", "--help")
    assert code == 0 and flag_help(out, "--epochs").endswith("(default: the recipe's)")
    assert flag_help(out, "--run-dir").endswith("(default: runs/RECIPE-TIME)")
    code, out, _ = run_main(capsys, "audit", "--help")
    assert code == 0
    seed = parameter_default(find_label_issues, "seed")
    assert flag_help(out, "--seed").endswith(f"(default: {seed})")
    assert flag_help(out, "--run-dir").endswith("(default: runs/labels-FOLDER-TIME)")
    assert flag_help(out, "--backbone").endswith("(default: mobilenet_v2)")


def test_every_flag_of_every_command_has_help_and_every_help_prints():
    hidden = set()
    for name, parser in command_parsers().items():
        for action in parser._actions:
            if action.help == argparse.SUPPRESS:
                hidden.update((name, flag) for flag in action.option_strings)
                continue
            assert action.help and action.help.strip(), f"kzoo {name} {action.option_strings}"
        parser.format_help()  # every default shown is found
    assert hidden == {("tune", "--directory")}  # an older spelling, still read


def test_recipe_flags_take_their_help_from_the_recipe_fields():
    from kzoo.cli.flags import field_help, flag_name, recipe_field
    from kzoo.recipes.recipe import FineTune

    checked = set()
    for name, parser in command_parsers().items():
        for action in parser._actions:
            try:
                recipe_field(action.dest)
            except KeyError:
                continue
            if action.dest == "search":  # tune --search NAME=SPEC: one entry of the section
                continue
            if flag_name(action.dest) in action.option_strings:
                assert action.help == field_help(action.dest), f"kzoo {name} {action.dest}"
                checked.add(action.dest)
    assert {"batch_size", "epochs", "head_epochs", "head_learning_rate", "learning_rate",
            "validation_split", "class_weight", "center_crop", "seed", "precision"} <= checked
    head_epochs = next(f for f in dataclasses.fields(FineTune) if f.name == "head_epochs")
    assert field_help("head_epochs") == head_epochs.metadata["help"]  # the one source


@pytest.fixture
def fine_tune_calls(monkeypatch, tmp_path):
    """The calls `kzoo finetune` makes to fine_tune (which does nothing), run where a folder
    photos/ exists (the command checks that it does before calling)."""
    import kzoo.training.finetune

    (tmp_path / "photos").mkdir()
    monkeypatch.chdir(tmp_path)
    calls = []
    monkeypatch.setattr(kzoo.training.finetune, "fine_tune",
                        lambda *args, **kwargs: calls.append((args, kwargs)))
    return calls


def test_option_and_model_option_both_reach_model_options(fine_tune_calls, capsys):
    assert run_main(capsys, "finetune", "photos", "--backbone", "mobilenet_v2", "--option",
                    "alpha=0.35", "--model-option", "dropout=0.2", "--weights", "none")[0] == 0
    (args, kwargs), = fine_tune_calls
    assert args == ("photos", None)
    assert kwargs["model_options"] == {"alpha": 0.35, "dropout": 0.2, "weights": None}


def test_finetune_passes_only_the_flags_given(fine_tune_calls, capsys):
    assert run_main(capsys, "finetune", "photos")[0] == 0
    assert run_main(capsys, "finetune", "photos", "--head-lr", "0.01", "--lr", "auto",
                    "--center-crop", "none", "--keep-last", "--epochs", "2",
                    "--image-size", "96")[0] == 0
    (_, bare), (_, given) = fine_tune_calls
    assert bare["model_options"] == {} and bare["finetune"] == {}
    assert not {"epochs", "learning_rate", "batch_size", "backbone", "seed"} & set(bare)
    assert given["finetune"] == {"head_learning_rate": 0.01, "center_crop": None,
                                 "keep_best": False}
    assert (given["learning_rate"], given["epochs"]) == ("auto", 2)
    assert given["model_options"] == {"image_size": 96}


def test_tune_takes_run_dir_and_still_reads_directory():
    from kzoo.tuning import ALGORITHMS

    parser = make_parser()
    assert parser.parse_args(["tune", "r.yaml", "--run-dir", "here"]).run_dir == "here"
    assert parser.parse_args(["tune", "r.yaml", "--directory", "there"]).run_dir == "there"
    assert parser.parse_args(["tune", "r.yaml"]).run_dir is None
    assert "--directory" not in command_parsers()["tune"].format_help()
    assert tuple(ALGORITHMS) == kzoo.cli.tune.ALGORITHMS


def test_the_command_sets_the_tensorflow_log_level_not_the_package(monkeypatch, capsys):
    code = "import os, kzoo; print(os.environ.get('TF_CPP_MIN_LOG_LEVEL'))"
    env = {k: v for k, v in cli_env().items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, check=True)
    assert result.stdout.strip() == "None"
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    assert run_main(capsys, "predict", "nowhere", "x.png", "--verbose")[0] == 2
    assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    assert run_main(capsys, "list")[0] == 0
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "2"


# --- subprocesses: the real entry point -------------------------------------------------------


def test_entry_point_lists_and_fails_cleanly(workspace):
    runs = run_cli_many({
        "list": (["list"], workspace),
        "nosuch": (["info", "nosuch"], workspace),
        "dropout": (["train", "lenet5_mnist", "--data-dir", "data", "--dropout", "1.5",
                     "--run-dir", "r"], workspace),
    })
    assert runs["list"].returncode == 0, runs["list"].stderr
    listed = [line.split()[0] for line in runs["list"].stdout.splitlines() if line.strip()]
    assert listed == kzoo.list_models()
    assert runs["nosuch"].returncode == 2
    assert_clean_error(runs["nosuch"], "'nosuch'")
    assert_clean_error(runs["dropout"], "--dropout", "'1.5'")


@pytest.mark.slow
def test_train_prints_results_and_fills_the_run_dir(workspace, cli):
    result = cli("train", "tiny.yaml", "--data-dir", "data", "--epochs", "1", "--run-dir", "run")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Traceback" not in output
    assert "confusion matrix" in result.stdout
    metrics = json.loads((workspace / "run" / "metrics.json").read_text())
    assert f"test accuracy {metrics['test_accuracy']:.4f}" in result.stdout
    assert metrics["status"] == "completed" and metrics["epochs_run"] == 1
    for name in ("model.keras", "history.csv", "confusion_matrix.csv", "recipe.yaml"):
        assert (workspace / "run" / name).is_file(), name
    assert read_epochs(workspace / "run" / "history.csv") == [0]


def test_resume_of_a_finished_run_is_refused(workspace, monkeypatch, capsys):
    monkeypatch.chdir(workspace)
    argv = ["train", "tiny.yaml", "--data-dir", "data", "--epochs", "1", "--run-dir", "run"]
    assert run_main(capsys, *argv)[0] == 0
    code, _, err = run_main(capsys, *argv, "--resume")
    assert code == 2 and err.startswith("kzoo: error:") and "already finished" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_killed_and_resumed_run_is_the_uninterrupted_run(tmp_path):
    """SIGKILL during epoch 3 of 4, then --resume: the same history rows and test accuracy, to
    the last digit, as a run never interrupted (shuffle, augmentation and dropout included)."""
    epochs = 4
    write_mnist_npz(tmp_path / "data", train=600, test=50)
    recipe = {**TINY_RECIPE, "model": "lenet5", "batch_size": 16, "epochs": epochs,
              "augmentation": "digits", "model_options": {"dropout": 0.3},
              "optimizer": {"name": "adam", "learning_rate": 0.001}}
    (tmp_path / "slow.yaml").write_text(yaml.safe_dump(recipe))

    def command(run_dir):
        return [sys.executable, "-m", "kzoo", "train", "slow.yaml", "--data-dir", "data",
                "--run-dir", run_dir, "--quiet"]

    whole = subprocess.run(command("whole"), cwd=tmp_path, env=cli_env(), capture_output=True,
                           text=True, timeout=300, check=False)
    assert whole.returncode == 0, whole.stderr
    history = tmp_path / "cut" / "history.csv"
    process = subprocess.Popen(command("cut"), cwd=tmp_path, env=cli_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and process.poll() is None:
            if history.is_file() and len(history.read_text().splitlines()) >= 3:  # 2 epochs
                break
            time.sleep(0.02)
        process.kill()  # SIGKILL: no clean-up, as when a machine dies
    finally:
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert 2 <= len(read_epochs(history)) < epochs
    assert not (tmp_path / "cut" / "metrics.json").exists()

    resumed = subprocess.run([*command("cut"), "--resume"], cwd=tmp_path, env=cli_env(),
                             capture_output=True, text=True, timeout=300, check=False)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "Traceback" not in resumed.stdout + resumed.stderr
    # after epoch 2, or 1 where the kill came while epoch 2's checkpoint was being written
    assert "after epoch 2 of 4" in resumed.stdout or (
        "after epoch 1 of 4" in resumed.stdout and "being written" in resumed.stdout)
    assert history.read_text() == (tmp_path / "whole" / "history.csv").read_text()
    cut = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    uninterrupted = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    assert cut["test_accuracy"] == uninterrupted["test_accuracy"]
    assert cut["test_loss"] == uninterrupted["test_loss"]
    assert cut["epochs_run"] == epochs and not (tmp_path / "cut" / "backup").exists()


# --- a quiet, fast command ------------------------------------------------------------------


def test_list_and_help_print_no_tensorflow_lines_and_import_no_tensorflow(workspace):
    runs = run_cli_many({
        "list": (["list"], workspace),
        "help": (["--help"], workspace),
        "info": (["info", "lenet5"], workspace),
    })
    for name, result in runs.items():
        assert result.returncode == 0, result.stderr
        assert result.stderr == "", f"kzoo {name} printed on stderr: {result.stderr}"
    assert "61,706" in runs["info"].stdout  # parameters, from the model index
    code = ("import sys; from kzoo.cli.main import main; main(['list']); main(['info', 'lenet5']);"
            " print('tensorflow' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=workspace, env=cli_env(),
                            capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "False"


@pytest.mark.slow
def test_tensorflow_log_lines_only_with_verbose(workspace):
    env = {k: v for k, v in cli_env().items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    argv = [sys.executable, "-m", "kzoo", "train", "tiny.yaml", "--data-dir", "data",
            "--epochs", "1", "--quiet"]
    quiet = subprocess.run([*argv, "--run-dir", "a"], cwd=workspace, env=env,
                           capture_output=True, text=True, check=False)
    assert quiet.returncode == 0, quiet.stderr
    tf_lines = [line for line in quiet.stderr.splitlines() if line[:5] in ("I0000", "E0000", "W0000")]
    assert not tf_lines, tf_lines
    loud = subprocess.run([*argv, "--verbose", "--run-dir", "b"], cwd=workspace, env=env,
                          capture_output=True, text=True, check=False)
    assert loud.returncode == 2 and "not allowed with argument --quiet" in loud.stderr
    loud = subprocess.run([*argv[:-1], "--verbose", "--run-dir", "b"], cwd=workspace, env=env,
                          capture_output=True, text=True, check=False)
    assert loud.returncode == 0 and any(line[:5] in ("I0000", "E0000", "W0000")
                                        for line in loud.stderr.splitlines()), loud.stderr


@pytest.mark.slow
def test_train_on_a_cat_and_dog_folder_then_predict_prints_cat_and_dog(tmp_path):
    from conftest import write_image_folder

    folder = write_image_folder(tmp_path / "pets", {"cat": 12, "dog": 12}, size=(8, 8))
    recipe = {"model": "softmax_regression", "dataset": str(folder), "batch_size": 8, "epochs": 3,
              "model_options": {"input_shape": [8, 8, 3]}, "validation_split": 0.25,
              "optimizer": {"name": "sgd", "learning_rate": 0.01}}
    (tmp_path / "pets.yaml").write_text(yaml.safe_dump(recipe))
    env = cli_env(KZOO_CACHE_DIR=str(tmp_path / "cache"))
    trained = subprocess.run([sys.executable, "-m", "kzoo", "train", "pets.yaml", "--run-dir",
                              "run", "--quiet"], cwd=tmp_path, env=env, capture_output=True,
                             text=True, check=False)
    assert trained.returncode == 0, trained.stderr
    (tmp_path / "run" / "class_names.json").unlink()  # the names travel inside model.keras
    predicted = subprocess.run([sys.executable, "-m", "kzoo", "predict", "run",
                                str(folder / "cat" / "0000.png"), str(folder / "dog" / "0000.png"),
                                "--format", "json"], cwd=tmp_path, env=env, capture_output=True,
                               text=True, check=False)
    assert predicted.returncode == 0, predicted.stderr
    classes = [{p["class"] for p in r["predictions"]} for r in json.loads(predicted.stdout)]
    assert classes == [{"cat", "dog"}, {"cat", "dog"}]


@pytest.mark.slow
def test_a_model_holding_python_code_is_refused_in_one_line(tmp_path):
    import keras

    inputs = keras.Input((4, 4, 3))
    outputs = keras.layers.Lambda(lambda x: x * 2)(keras.layers.Flatten()(inputs))
    keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(outputs)).save(
        tmp_path / "unsafe.keras")
    result = subprocess.run([sys.executable, "-m", "kzoo", "predict", "unsafe.keras", "x.png"],
                            cwd=tmp_path, env=cli_env(), capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert_clean_error(result, "unsafe.keras", "Lambda layer", "safe_mode=False")
