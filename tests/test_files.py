"""Atomic writes: a reader never sees half a file, and the file gets an ordinary mode."""

from __future__ import annotations

import os
import stat

import pytest

from kzoo.files import write_csv, write_json, write_text


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.mark.parametrize("write", [
    lambda path: write_json(path, {"accuracy": 0.5}),
    lambda path: write_text(path, "model: lenet5\n"),
    lambda path: write_csv(path, ["a"], [[1]]),
])
def test_atomic_writes_honour_the_umask_like_open(tmp_path, umask_022, write):
    written = write(tmp_path / "metrics.json")
    assert stat.S_IMODE(written.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no partial file left


def test_atomic_writes_honour_a_stricter_umask(tmp_path):
    old = os.umask(0o077)
    try:
        written = write_json(tmp_path / "class_names.json", ["ant", "bee"])
    finally:
        os.umask(old)
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
