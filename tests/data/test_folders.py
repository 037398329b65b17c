"""Image folders of any size: the scan and its manifest, the on-disk image store (reuse,
invalidation, a killed write), streaming past a small memory limit with uint8 batches, and the
audit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from conftest import assert_clean_error, cli_env, write_image_folder
from messy_images import (
    MESSY_DECODED,
    MESSY_SKIPPED,
    class_image,
    make_clean_folder,
    write_messy_files,
)

from kzoo.data import pipeline
from kzoo.data.audit import audit_scan
from kzoo.data.datasets import image_folder
from kzoo.data.images import read_image
from kzoo.data.locations import cache_dir
from kzoo.data.manifest import read_manifest
from kzoo.data.pipeline import Examples, make_pipeline, raw_batches, streams
from kzoo.data.scan import scan_folder
from kzoo.data.store import Framing, ImageStore
from kzoo.errors import KzooError

FRAMING = Framing((16, 16), 3, None)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Each test starts with an empty cache of its own."""
    monkeypatch.setenv("KZOO_CACHE_DIR", str(tmp_path / "cache"))


def _scan(folder, framing=FRAMING):
    return scan_folder(folder, framing, progress=False)


def test_second_scan_decodes_nothing_and_reads_the_same_pixels(tmp_path):
    make_clean_folder(tmp_path / "imgs", per_class=5)
    first = _scan(tmp_path / "imgs")
    assert (first.stats.decoded, first.stats.reused, first.stats.cache) == (10, 0, "built")
    again = _scan(tmp_path / "imgs")
    assert (again.stats.decoded, again.stats.reused, again.stats.cache) == (0, 10, "hit")
    part = again.parts["train"]
    assert part.store.path == first.parts["train"].store.path
    pixels = part.store.rows.read(part.rows)
    expected = np.stack([read_image(path, (16, 16)) for path in part.paths])
    assert pixels.dtype == np.uint8 and (pixels == expected).all()
    manifest = read_manifest(tmp_path / "imgs")
    assert len(manifest) == 10 and {r.status for r in manifest.values()} == {"ok"}


def test_a_changed_added_or_removed_file_is_the_only_one_redone(tmp_path):
    folder = make_clean_folder(tmp_path / "imgs", per_class=5)
    _scan(folder)
    changed = folder / "ants" / "02.jpg"
    class_image(1, seed=99).save(changed)  # new content (and a new mtime)
    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))
    scan = _scan(folder)
    assert (scan.stats.decoded, scan.stats.reused, scan.stats.cache) == (1, 9, "updated")
    part = scan.parts["train"]
    row = part.rows[part.paths.index(str(changed))]
    assert (part.store.rows.read([row])[0] == read_image(changed, (16, 16))).all()

    class_image(0, seed=123).save(folder / "ants" / "new.jpg")
    assert _scan(folder).stats.decoded == 1
    (folder / "bees" / "00.jpg").unlink()
    removed = _scan(folder)
    assert removed.stats.decoded == 0 and removed.stats.cache == "updated"
    assert len(removed.parts["train"].rows) == 10
    # another framing of the same folder is a store of its own, decoded once
    assert _scan(folder, Framing((8, 8), 3, 0.875)).stats.decoded == 10


def test_messy_files_are_skipped_once_and_remembered(tmp_path):
    make_clean_folder(tmp_path / "imgs", per_class=3)
    write_messy_files(tmp_path / "imgs" / "ants" / "junk")
    first = _scan(tmp_path / "imgs")
    reasons = {os.path.basename(s.path): s.reason for s in first.skipped}
    assert sorted(reasons) == sorted(MESSY_SKIPPED)
    assert "truncated" in reasons["truncated.jpg"] and reasons["empty.jpg"] == "empty file (0 bytes)"
    assert len(first.parts["train"].rows) == 6 + len(MESSY_DECODED)
    again = _scan(tmp_path / "imgs")
    assert again.stats.decoded == 0 and again.stats.cache == "hit"
    assert {os.path.basename(s.path): s.reason for s in again.skipped} == reasons


KILLED_SCAN = """
import sys, time
import kzoo.data.scan as scan
from kzoo.data.scan import Framing, scan_folder
decode = scan.decode_file
def slow(*args, **kwargs):
    time.sleep(0.05)
    return decode(*args, **kwargs)
scan.decode_file = slow
scan_folder(sys.argv[1], Framing((16, 16), 3, None), progress=False)
"""


def test_a_killed_cache_write_is_never_trusted(tmp_path):
    folder = make_clean_folder(tmp_path / "imgs", per_class=60)
    env = cli_env(KZOO_CACHE_DIR=str(cache_dir()), KZOO_DECODE_WORKERS="1")
    process = subprocess.Popen([sys.executable, "-c", textwrap.dedent(KILLED_SCAN), str(folder)],
                               env=env)
    images = cache_dir() / "images"
    deadline = time.time() + 120
    while not list(images.glob(".partial-*/pixels.u8")) and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)  # some rows written, the store not finished
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert list(images.glob(".partial-*")), "the kill came too late to test anything"
    assert not [p for p in images.iterdir() if not p.name.startswith(".")]
    scan = _scan(folder)
    assert scan.stats.decoded == 120 and scan.stats.cache == "built"
    part = scan.parts["train"]
    assert (part.store.rows.read(part.rows[-3:]) ==
            np.stack([read_image(p, (16, 16)) for p in part.paths[-3:]])).all()


def test_a_truncated_store_is_rebuilt(tmp_path):
    folder = make_clean_folder(tmp_path / "imgs", per_class=4)
    store = _scan(folder).parts["train"].store
    with open(store.path / "pixels.u8", "r+b") as handle:
        handle.truncate(100)
    assert ImageStore.open(store.path) is None
    assert _scan(folder).stats.decoded == 8


def test_a_folder_larger_than_the_memory_limit_streams_uint8_batches(tmp_path, monkeypatch):
    write_image_folder(tmp_path / "imgs", {"a": 30, "b": 20}, size=(20, 20))
    splits = image_folder(tmp_path / "imgs", (16, 16), validation_split=0.2, seed=0, progress=False)
    train = splits.examples["train"]
    assert not streams(train)  # 40 rows of 768 bytes: small by default
    monkeypatch.setenv("KZOO_IN_MEMORY_LIMIT_MB", str(train.nbytes / 2 / (1 << 20)))
    monkeypatch.setattr(pipeline, "BLOCK_BYTES", 5 * 16 * 16 * 3)  # blocks of 5 images
    monkeypatch.setattr(pipeline, "_in_memory_batches", _forbidden)
    assert streams(train) and not train.in_memory
    raw = raw_batches(train, 8, shuffle_seed=0)
    assert raw.element_spec[0].dtype.name == "uint8"
    epochs = [[(x.numpy(), y.numpy()) for x, y in raw] for _ in range(2)]
    expected = {path: read_image(path, (16, 16)) for path in train.paths}
    for epoch in epochs:
        images = np.concatenate([x for x, _ in epoch])
        labels = np.concatenate([y for _, y in epoch])
        assert len(images) == len(train) == 40
        assert sorted(labels.tolist()) == sorted(train.labels.tolist())
        for pixels, label in zip(images, labels):  # every image arrives with its own label
            matches = [p for p, e in expected.items() if (e == pixels).all()]
            assert len(matches) == 1 and train.labels[train.paths.index(matches[0])] == label
    first = np.concatenate([y for _, y in epochs[0]])
    assert not (first == np.concatenate([y for _, y in epochs[1]])).all()  # reshuffled
    batch, _ = next(iter(make_pipeline(train, 8)))
    assert batch.dtype.name == "float32"


def _forbidden(*args, **kwargs):
    raise AssertionError("the in-memory path was used")


def test_examples_in_memory_keep_todays_order(tmp_path):
    images = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1)
    examples = Examples.from_arrays(images, np.arange(10))
    labels = [y.numpy() for _, y in make_pipeline(examples, 4, shuffle_seed=3)]
    import tensorflow as tf

    reference = tf.data.Dataset.from_tensor_slices(np.arange(10)).shuffle(10, seed=3).batch(4)
    assert [list(b) for b in labels] == [list(b.numpy()) for b in reference]


def test_audit_counts_and_cross_split_duplicates(tmp_path):
    root = tmp_path / "pets"
    make_clean_folder(root / "train", classes=("cat", "dog"), per_class=6, seed=1)
    make_clean_folder(root / "val", classes=("cat", "dog"), per_class=2, seed=2)
    (root / "train" / "dog" / "extra.jpg").write_bytes((root / "train" / "dog" / "01.jpg").read_bytes())
    leaked = root / "val" / "cat" / "leaked.jpg"
    leaked.write_bytes((root / "train" / "cat" / "03.jpg").read_bytes())
    (root / "train" / "cat" / "notes.txt").write_text("x")
    report = audit_scan(_scan(root))
    assert report["splits"]["train"]["per_class"] == {"cat": 6, "dog": 7}
    assert report["splits"]["validation"]["images"] == 5
    assert report["imbalance_ratio"] == pytest.approx(7 / 6, abs=1e-3)
    across = report["duplicates"]["across_splits"]
    assert len(across) == 1 and set(across[0]["files"]) == {"train/cat/03.jpg", "val/cat/leaked.jpg"}
    assert report["duplicates"]["leaked_images"] == {"validation": 1}
    assert len(report["duplicates"]["within_split"]) == 1
    assert report["skipped"] == [{"path": "train/cat/notes.txt", "reason": "not an image (.txt file)"}]
    assert report["width"] == {"min": 48, "median": 48, "max": 48} and report["modes"] == {"RGB": 18}
    assert report["test_split"] is False


def test_kzoo_audit_names_the_leaked_file_and_writes_audit_json(tmp_path, cli):
    root = tmp_path / "pets"
    make_clean_folder(root / "train", classes=("cat", "dog"), per_class=4, seed=1)
    make_clean_folder(root / "val", classes=("cat", "dog"), per_class=2, seed=2)
    (root / "val" / "dog" / "copy.jpg").write_bytes((root / "train" / "dog" / "02.jpg").read_bytes())
    result = cli("audit", str(root), "--image-size", "32", "--output", "out/audit.json",
                 KZOO_CACHE_DIR=str(cache_dir()))
    assert result.returncode == 0, result.stderr
    assert "1 image of val/ is byte-identical to images of train/ (listed in audit.json)" in result.stdout
    assert "val/dog/copy.jpg" in result.stdout and "train/dog/02.jpg" in result.stdout
    report = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert report["splits"]["train"]["images"] == 8
    listed = cli("cache", "list", KZOO_CACHE_DIR=str(cache_dir()))
    assert str(root) in listed.stdout and "train/32x32x3-crop0.875" in listed.stdout
    cleared = cli("cache", "clear", KZOO_CACHE_DIR=str(cache_dir()))
    assert cleared.returncode == 0 and not list((cache_dir() / "images").glob("*"))
    missing = cli("audit", str(tmp_path / "nope"), KZOO_CACHE_DIR=str(cache_dir()))
    assert_clean_error(missing, "does not exist")


def test_an_empty_class_is_an_error_before_training(tmp_path):
    make_clean_folder(tmp_path / "imgs", per_class=2)
    (tmp_path / "imgs" / "wasps").mkdir()
    with pytest.raises(KzooError, match="wasps.*holds no readable images"):
        _scan(tmp_path / "imgs")


@pytest.mark.parametrize("streamed", [False, True])
def test_an_epoch_is_a_function_of_the_seed_and_the_epoch(tmp_path, monkeypatch, streamed):
    """Epochs 2 and 3 on their own (a resumed run) are the epochs 2 and 3 of a whole run:
    order and augmentation alike; and epochs differ from each other."""
    from kzoo.data.augment import augmentation
    from kzoo.data.pipeline import epoch_batches

    write_image_folder(tmp_path / "imgs", {"a": 30, "b": 20}, size=(20, 20))
    train = image_folder(tmp_path / "imgs", (16, 16), validation_split=0.2, progress=False)
    examples = train.examples["train"]
    if streamed:
        monkeypatch.setenv("KZOO_IN_MEMORY_LIMIT_MB", str(examples.nbytes / 2 / (1 << 20)))
        monkeypatch.setattr(pipeline, "BLOCK_BYTES", 5 * 16 * 16 * 3)
        monkeypatch.setattr(pipeline, "SHUFFLE_BUFFER_BYTES", 12 * 16 * 16 * 3)
    assert streams(examples) == streamed

    def batches(first):
        data = epoch_batches(examples, 8, seed=3, augment=augmentation("cifar", seed=3),
                             first_epoch=first, epochs=4)
        return [(x.numpy(), y.numpy()) for x, y in data]

    whole, resumed = batches(0), batches(2)
    steps = -(-len(examples) // 8)
    assert len(whole) == 4 * steps and len(resumed) == 2 * steps
    for (x, y), (x2, y2) in zip(whole[2 * steps:], resumed):
        assert np.array_equal(y, y2) and np.array_equal(x, x2)
    first, second = (np.concatenate([y for _, y in whole[e * steps:(e + 1) * steps]])
                     for e in (0, 1))
    assert sorted(first) == sorted(second) == sorted(examples.labels)
    assert not np.array_equal(first, second)  # each epoch its own order
