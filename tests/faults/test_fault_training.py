"""Fault injection into training: ``kzoo train`` in a real process, killed with SIGKILL inside
a checkpoint write (or at a random moment of an epoch), then ``--resume``d.

The property: the resumed run ends where a run never interrupted ends: the same history,
row for row, and the same test accuracy and loss, to the last digit; a half-written
checkpoint is passed over, never trusted. Where the kill falls is drawn at random from a
seed (``KZOO_FAULT_SEED``, default 0), printed, so a failure can be replayed."""

from __future__ import annotations

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
from conftest import TINY_LENET_RECIPE, assert_clean_error, cli_env, write_mnist_npz
from full_disk import with_file_limit

pytestmark = pytest.mark.slow

EPOCHS = 3
# What the kill waits for: a checkpoint's weights half-written, its weights renamed but its
# record not yet written, or a random moment of the epoch after it.
MOMENTS = ("partial weights", "weights without record", "within the next epoch")


@pytest.fixture
def workspace(tmp_path) -> Path:
    write_mnist_npz(tmp_path / "data", train=400, test=50)
    recipe = {**TINY_LENET_RECIPE, "batch_size": 16, "epochs": EPOCHS, "validation_split": 0.1}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(recipe))
    return tmp_path


def _train(workspace: Path, run_dir: str, *extra: str,
           file_limit: int | None = None) -> subprocess.Popen:
    """``kzoo train`` of the tiny recipe; with ``file_limit``, under ``ulimit -f`` (bytes): a
    disk that fills, each write past it failing with EFBIG (SIGXFSZ ignored)."""
    command = [sys.executable, "-m", "kzoo", "train", "tiny.yaml", "--data-dir", "data",
               "--run-dir", run_dir, "--quiet", *extra]
    return subprocess.Popen(with_file_limit(command, file_limit), cwd=workspace, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finished(process: subprocess.Popen) -> str:
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, out + err
    assert "Traceback" not in out + err, err
    return out


def _kill_at(process: subprocess.Popen, backup: Path, epoch: int, moment: str,
             chance: random.Random) -> str:
    """SIGKILL ``process`` at ``moment`` of epoch ``epoch``'s checkpoint; what it hit."""
    weights = backup / f"epoch-{epoch:04d}.weights.h5"
    record = backup / f"epoch-{epoch:04d}.json"
    partial = backup / f".partial-{weights.name}"
    deadline = time.monotonic() + 240
    hit = None
    while process.poll() is None and time.monotonic() < deadline:
        if moment == "partial weights" and partial.exists():
            hit = moment
        elif moment != "within the next epoch" and weights.exists() and not record.exists():
            hit = "weights without record"
        elif record.exists():
            time.sleep(chance.uniform(0, 1.0) if moment == "within the next epoch" else 0)
            hit = f"after epoch {epoch}'s checkpoint"
        if hit:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.001)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    return hit


def test_a_run_killed_in_a_checkpoint_write_resumes_to_the_uninterrupted_run(workspace):
    chance = random.Random(int(os.environ.get("KZOO_FAULT_SEED", "0")))
    epoch, moment = chance.randint(1, EPOCHS - 1), chance.choice(MOMENTS)
    whole = _train(workspace, "whole")
    hit = _kill_at(_train(workspace, "cut"), workspace / "cut" / "backup", epoch, moment,
                   chance)
    print(f"killed at {moment!r} of epoch {epoch}: {hit}")
    _finished(whole)
    assert not (workspace / "cut" / "metrics.json").exists()

    resumed = _finished(_train(workspace, "cut", "--resume"))
    assert "resuming" in resumed, resumed
    _same_result(workspace / "cut", workspace / "whole")


def _same_result(cut: Path, uninterrupted: Path) -> None:
    assert (cut / "history.csv").read_text() == (uninterrupted / "history.csv").read_text()
    ended = json.loads((cut / "metrics.json").read_text())
    expected = json.loads((uninterrupted / "metrics.json").read_text())
    for key in ("test_accuracy", "test_loss", "epochs_run", "status"):
        assert ended[key] == expected[key], key
    assert not (cut / "backup").exists()


# --- a disk that fills, a run directory that cannot be written -----------------------------------

FILE_LIMIT = 100_000  # bytes: the first checkpoint's weights do not fit


def _refused(process: subprocess.Popen) -> None:
    out, err = process.communicate(timeout=300)
    assert process.returncode == 2, err
    assert_clean_error(subprocess.CompletedProcess(process.args, 2, out, err))


def test_after_training_on_a_full_disk_resume_ends_as_the_uninterrupted_run(workspace):
    whole = _train(workspace, "whole")
    full = _train(workspace, "full", file_limit=FILE_LIMIT)
    full.communicate(timeout=300)
    assert full.returncode != 0
    assert not (workspace / "full" / "metrics.json").exists()
    _finished(whole)
    _finished(_train(workspace, "full", "--resume"))  # the disk has room again
    _same_result(workspace / "full", workspace / "whole")


def test_training_on_a_full_disk_is_one_line(workspace):
    _refused(_train(workspace, "full", file_limit=FILE_LIMIT))


def test_a_run_dir_that_cannot_be_written_is_one_line(workspace):
    """As root ``chmod 555`` does not stop a write: a folder under /proc and a path under a
    regular file are run directories that cannot be made."""
    (workspace / "a-file").write_text("")
    runs = [_train(workspace, place) for place in ("/proc/kzoo-cannot-write/run",
                                                    "a-file/run")]
    for process in runs:
        _refused(process)
