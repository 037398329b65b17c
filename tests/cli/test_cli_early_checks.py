"""What the ``kzoo`` command tells a user who mistypes: an unknown flag gets the closest flag of
the command, and names, paths and weights are checked before TensorFlow loads or a folder is
scanned."""

from __future__ import annotations

import pytest

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
