"""Fault injection: a disk that fills, and a place that cannot be written, under real
``kzoo`` processes.

A full disk is a file-size limit (``ulimit -f``): every write past it fails with ``EFBIG``
(SIGXFSZ, which would kill the process, is ignored, so the write fails as with ENOSPC).
A place that cannot be written is a path under ``/proc`` or under a regular file: the tests
run as root, for whom ``chmod 555`` does not stop a write, so a read-only directory is made
that way where the user is root.

The property: the run ends with one ``kzoo: error:`` line and exit status 2, never a
traceback; and the next normal run succeeds with the result of a run that never failed: no
half-written file is trusted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import assert_clean_error, cli_env, write_image_folder
from full_disk import with_file_limit

pytestmark = pytest.mark.slow

SIDE = "64"


def _kzoo(*args, cwd: Path, cache: Path, file_limit: int | None = None):
    command = [sys.executable, "-m", "kzoo", *map(str, args)]
    return subprocess.run(with_file_limit(command, file_limit), cwd=cwd,
                          env=cli_env(KZOO_CACHE_DIR=str(cache)), capture_output=True,
                          text=True, timeout=240, check=False)


def _refused(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert_clean_error(result)


def _report(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    report.pop("scan")
    return report


@pytest.fixture
def folder(tmp_path) -> Path:
    return write_image_folder(tmp_path / "images", {"ants": 60, "bees": 60}, size=(80, 70),
                              extension=".jpg")


def _audit(folder, cwd, cache, output="audit.json", file_limit=None):
    return _kzoo("audit", folder, "--image-size", SIDE, "--json", "--quiet", "--output", output,
                 cwd=cwd, cache=cache, file_limit=file_limit)


LIMIT = 20_000  # bytes a file: the image store cannot be made


def test_an_audit_on_a_full_disk_is_one_line(folder, tmp_path):
    _refused(_audit(folder, tmp_path, tmp_path / "cache", file_limit=LIMIT))


def test_after_an_audit_on_a_full_disk_the_next_audit_is_whole(folder, tmp_path):
    fresh = _report(_audit(folder, tmp_path, tmp_path / "fresh-cache"))
    cache = tmp_path / "cache"
    full = _audit(folder, tmp_path, cache, output="full.json", file_limit=LIMIT)
    assert full.returncode != 0
    assert not (tmp_path / "full.json").exists()
    assert _report(_audit(folder, tmp_path, cache)) == fresh


WRITE_PROTECTED = {
    "under /proc": lambda tmp: Path("/proc/kzoo-cannot-write/audit.json"),
    "under a file": lambda tmp: tmp / "a-file" / "audit.json",
}


@pytest.mark.parametrize("place", sorted(WRITE_PROTECTED))
def test_an_audit_that_cannot_write_its_report_is_one_line(folder, tmp_path, place):
    (tmp_path / "a-file").write_text("")
    output = WRITE_PROTECTED[place](tmp_path)
    _refused(_audit(folder, tmp_path, tmp_path / "cache", output=output))


def test_an_audit_into_a_read_only_folder_is_one_line(folder, tmp_path):
    """``chmod 555`` where it protects (not as root); as root the test says why it cannot."""
    if os.geteuid() == 0:
        pytest.skip("running as root, for whom chmod 555 does not stop a write; the "
                    "places under /proc and under a file above stand for it")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        _refused(_audit(folder, tmp_path, tmp_path / "cache", output=locked / "audit.json"))
    finally:
        locked.chmod(0o755)
