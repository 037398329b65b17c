"""What the ``kzoo`` command tells a user who mistypes: an unknown flag gets the closest flag of
the command, and names, paths and weights are checked before TensorFlow loads or a folder is
scanned."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import assert_clean_error, cli_env, write_image_folder

from kzoo.cli.main import main


def run_main(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("kzoo: error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize(("argv", "suggested"), [
    (["train", "tiny.yaml", "--sed", "3"], "did you mean --seed?"),
    (["train", "tiny.yaml", "--lrr=0.1"], "did you mean --lr?"),
    (["finetune", "folder", "--bakbone", "resnet50"], "did you mean --backbone?"),
    (["list", "--tagg", "mnist"], "did you mean --tag?"),
    (["audit", "folder", "--labls"], "did you mean --labels?"),
])
def test_an_unknown_flag_gets_the_commands_closest_flag(capsys, argv, suggested):
    code, _, err = run_main(capsys, *argv)
    line = error_line(err)
    assert code == 2
    assert line.startswith(f"kzoo: error: kzoo {argv[0]}: unrecognized arguments: "), line
    assert suggested in line, line


def test_several_unknown_flags_each_get_their_closest(capsys):
    code, _, err = run_main(capsys, "train", "tiny.yaml", "--sed", "3", "--quite")
    assert code == 2
    assert "did you mean --seed for --sed, --quiet for --quite?" in error_line(err)


def test_a_flag_like_no_other_gets_no_guess(capsys):
    code, _, err = run_main(capsys, "train", "tiny.yaml", "--zzzzzzzz")
    line = error_line(err)
    assert code == 2 and "unrecognized arguments: --zzzzzzzz" in line and "did you mean" not in line


# --- names, paths and weights are checked before TensorFlow loads and before any scan ----------

FRESH_MAIN = ("import sys; from kzoo.cli.main import main; code = main(sys.argv[1:]); "
              "print('tensorflow loaded' if 'tensorflow' in sys.modules else 'no tensorflow'); "
              "sys.exit(code)")


@pytest.fixture
def fresh(tmp_path):
    """``fresh(*argv)``: the command in a new Python process (cwd ``tmp_path``, offline, an
    empty cache and Keras home), with whether it loaded TensorFlow."""
    cache, keras_home = tmp_path / "cache", tmp_path / "keras-home"
    keras_home.mkdir()

    def run(*argv, **env):
        environment = cli_env(KZOO_CACHE_DIR=str(cache), KERAS_HOME=str(keras_home), **env)
        environment.pop("KZOO_WEIGHTS_DIR", None)
        result = subprocess.run([sys.executable, "-c", FRESH_MAIN, *map(str, argv)], cwd=tmp_path,
                                env=environment, capture_output=True, text=True, timeout=300,
                                check=False)
        result.scanned = (cache / "folders").exists() or (cache / "images").exists()
        return result

    return run


@pytest.fixture
def photos(tmp_path):
    return write_image_folder(tmp_path / "photos", {"ant": 3, "bee": 3})


@pytest.mark.parametrize(("argv", "fragments"), [
    (["finetune", "photos", "--backbone", "resnt50"], ["unknown model 'resnt50'", "resnet50"]),
    (["finetune", "photos", "--backbone", "lenet5"], ["no pretrained backbone", "mobilenet_v2"]),
    (["finetune", "photos", "--weights", "weights/missing.h5"],
     ["weights file 'weights/missing.h5' does not exist"]),
    (["finetune", "photos", "--backbone", "mobilenet_v2", "--model-option", "alpah=0.35"],
     ["has no option 'alpah'", "alpha"]),
    (["finetune", "photos", "--backbone", "mobilenet_v2", "--model-option", "alpha=wide"],
     ["--model-option alpha='wide'", "expected a number"]),
    (["finetune", "no-such-folder"], ["image folder 'no-such-folder' does not exist"]),
    (["finetune", "photos", "--data-dir", "no-such-dir"], ["data directory", "does not exist"]),
    (["finetune", "--recipe", "no_such_recipe"], ["unknown recipe 'no_such_recipe'"]),
    (["lr-find", "photos", "--backbone", "resnt50"], ["unknown model 'resnt50'"]),
    (["train", "photos"], ["'photos' is a folder, not a recipe", "kzoo finetune photos"]),
    (["train", "no_such_recipe"], ["unknown recipe 'no_such_recipe'"]),
    (["train", "photos/ant/0000.png"], ["photos/ant/0000.png: not a recipe"]),
    (["tune", "no_such_recipe"], ["unknown recipe 'no_such_recipe'"]),
    (["audit", "photos", "--labels", "--backbone", "resnt50"], ["unknown model 'resnt50'"]),
    (["audit", "photos", "--labels", "--weights", "/no/such/w.h5"], ["does not exist"]),
    (["audit", "no-such-folder", "--labels"], ["image folder 'no-such-folder' does not exist"]),
    (["tune", "photos"], ["'photos' is a folder, not a recipe"]),
])
def test_bad_names_and_paths_fail_in_one_line_before_tensorflow_loads(fresh, photos, argv,
                                                                      fragments):
    result = fresh(*argv)
    assert_clean_error(result, *fragments)
    assert result.returncode == 2
    assert result.stdout.splitlines()[-1] == "no tensorflow", result.stdout + result.stderr
    assert not result.scanned


@pytest.mark.slow
@pytest.mark.parametrize(("flags", "fragments"), [
    ([], ["could not get the ImageNet weights of ResNet50",
          "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"]),
    (["--weights", "missing.h5"], ["weights file 'missing.h5' does not exist"]),
])
def test_missing_weights_are_reported_before_the_folder_is_scanned(fresh, photos, flags,
                                                                   fragments):
    """Offline, with the default ResNet50's ImageNet weights (or a weights file named without
    a folder, looked for in the weights folders) in none of the folders searched: the one-line
    error names the file, and the folder was never scanned."""
    result = fresh("finetune", "photos", "--run-dir", "runs/one", *flags)
    assert_clean_error(result, *fragments)
    assert not result.scanned, result.stderr
    assert "scanning" not in result.stderr


def test_the_label_audits_backbone_checked_early_is_the_one_it_uses():
    """The command checks ``kzoo audit --labels``'s default backbone without importing the
    label audit (it loads TensorFlow): the two must name the same model."""
    import ast
    import inspect

    import kzoo.cli.data

    source = Path(inspect.getfile(kzoo.cli.data)).parents[1] / "analysis" / "labels.py"
    function = next(node for node in ast.walk(ast.parse(source.read_text()))
                    if isinstance(node, ast.FunctionDef) and node.name == "find_label_issues")
    defaults = dict(zip([a.arg for a in function.args.kwonlyargs], function.args.kw_defaults))
    assert ast.literal_eval(defaults["backbone"]) == kzoo.cli.data.LABELS_BACKBONE
