"""Fault injection into the folder cache: ``kzoo audit FOLDER`` in a real subprocess, killed
with SIGKILL at random points of its scan, again and again over the same cache; then a run
that is let finish.

The property: the finished run reports what an uninterrupted run on a fresh cache reports,
and the pixels, labels and files training would read from the cache are the fresh cache's,
byte for byte. No half-written file is trusted."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import cli_env, write_image_folder

from kzoo.data.scan import scan_folder
from kzoo.data.store import Framing

pytestmark = pytest.mark.slow

SIDE = 96


def _audit(folder: Path, cache: Path, output: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "kzoo", "audit", str(folder), "--image-size", str(SIDE),
         "--json", "--quiet", "--output", str(output)],
        cwd=output.parent, env=cli_env(KZOO_CACHE_DIR=str(cache)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen) -> dict:
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert "Traceback" not in err, err
    return json.loads(out)


def _without_timings(report: dict) -> dict:
    report = json.loads(json.dumps(report))
    report.pop("scan")  # what this scan did (decoded, reused, seconds), not what it found
    return report


def _cached(folder: Path, cache: Path, monkeypatch) -> dict:
    """What training reads from ``cache``: per split, the files, labels and pixels."""
    monkeypatch.setenv("KZOO_CACHE_DIR", str(cache))
    scan = scan_folder(folder, Framing((SIDE, SIDE), 3, 0.875), progress=False)
    return {split: (part.paths, part.labels.tolist(), part.store.rows.read(part.rows))
            for split, part in scan.parts.items()}


@pytest.fixture
def folder(tmp_path) -> Path:
    """A few hundred small JPEGs in train/ and val/, with a damaged file and a duplicate."""
    root = tmp_path / "images"
    write_image_folder(root / "train", {"ants": 150, "bees": 150}, size=(120, 100),
                       extension=".jpg")
    write_image_folder(root / "val", {"ants": 20, "bees": 20}, size=(120, 100), seed=1,
                       extension=".jpg")
    (root / "train" / "ants" / "damaged.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    (root / "val" / "bees" / "copy.jpg").write_bytes(
        (root / "train" / "bees" / "0003.jpg").read_bytes())
    return root


def test_a_cache_build_killed_at_random_points_ends_as_an_uninterrupted_one(
        folder, tmp_path, monkeypatch):
    started = time.monotonic()
    clean = _finish(_audit(folder, tmp_path / "fresh-cache", tmp_path / "fresh.json"))
    duration = time.monotonic() - started

    cache = tmp_path / "killed-cache"
    chance = random.Random(20)
    kills = 0
    for round_ in range(8):
        before = set((cache / "images").glob(".partial-*"))
        process = _audit(folder, cache, tmp_path / "killed.json")
        if round_ % 2:  # once this run's partial store exists: inside the write
            deadline = time.monotonic() + duration * 2
            while (not set((cache / "images").glob(".partial-*")) - before
                   and time.monotonic() < deadline and process.poll() is None):
                time.sleep(0.002)
            time.sleep(chance.uniform(0, 0.1))
        else:  # anywhere in the run, start-up included
            time.sleep(chance.uniform(0.05, 0.8 * duration))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.communicate()
    assert kills >= 4, kills  # most rounds were cut off (the rest finished first)

    resumed = _finish(_audit(folder, cache, tmp_path / "resumed.json"))
    assert _without_timings(resumed) == _without_timings(clean)
    assert resumed["skipped"] and resumed["duplicates"]["across_splits"]
    fresh, kept = _cached(folder, tmp_path / "fresh-cache", monkeypatch), _cached(
        folder, cache, monkeypatch)
    assert fresh.keys() == kept.keys()
    for split in fresh:
        assert fresh[split][:2] == kept[split][:2]
        np.testing.assert_array_equal(fresh[split][2], kept[split][2])
    assert json.loads((tmp_path / "resumed.json").read_text()) == resumed
    assert not os.path.exists(tmp_path / "killed.json.tmp")
