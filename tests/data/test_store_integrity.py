"""What the image store may trust: a failed read is tried again, not remembered; a short read is
completed; two stores joined stay on disk; a new decoder or store format makes a new store."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import PIL
import pytest
from messy_images import make_clean_folder, make_split_folder

from kzoo.data import images, pipeline
from kzoo.data.images import read_image
from kzoo.data.manifest import read_manifest
from kzoo.data.pipeline import Examples, raw_batches, streams
from kzoo.data.scan import scan_folder
from kzoo.data.store import Framing, store_key

FRAMING = Framing((16, 16), 3, None)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KZOO_CACHE_DIR", str(tmp_path / "cache"))


def _scan(folder):
    return scan_folder(folder, FRAMING, progress=False)


def test_a_failed_read_is_tried_again_on_the_next_scan(tmp_path, monkeypatch):
    folder = make_clean_folder(tmp_path / "imgs", per_class=4)
    locked = folder / "ants" / "02.jpg"
    read_bytes = Path.read_bytes

    def denied(path):
        if Path(path) == locked:  # as `chmod 000` does for a user other than root
            raise PermissionError(13, "Permission denied", str(path))
        return read_bytes(path)

    with monkeypatch.context() as patch:
        patch.setattr(Path, "read_bytes", denied)
        first = _scan(folder)
    assert [(Path(s.path), s.reason) for s in first.skipped] == [(locked, "permission denied")]
    assert len(first.parts["train"].rows) == 7
    again = _scan(folder)  # readable again (`chmod 644`): size and mtime have not changed
    assert again.skipped == [] and len(again.parts["train"].rows) == 8
    assert again.stats.decoded == 1 and again.stats.reused == 7
    part = again.parts["train"]
    row = part.rows[part.paths.index(str(locked))]
    assert (part.store.rows.read([row])[0] == read_image(locked, (16, 16))).all()
    assert read_manifest(folder)["ants/02.jpg"].status == "ok"


def test_an_undecodable_file_is_still_remembered(tmp_path):
    folder = make_clean_folder(tmp_path / "imgs", per_class=3)
    (folder / "ants" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    assert len(_scan(folder).skipped) == 1
    again = _scan(folder)
    assert len(again.skipped) == 1 and again.stats.decoded == 0 and again.stats.cache == "hit"


def test_a_short_positional_read_is_completed(tmp_path, monkeypatch):
    folder = make_clean_folder(tmp_path / "imgs", per_class=5)
    part = _scan(folder).parts["train"]
    expected = part.store.rows.read(part.rows)
    pread, calls = os.pread, []

    def short(fd, size, offset):  # as Linux does past 0x7ffff000 bytes, in miniature
        calls.append(size)
        return pread(fd, min(size, 1000), offset)

    monkeypatch.setattr(os, "pread", short)
    pixels = part.store.rows.read(part.rows)  # 10 rows of 768 bytes, read as one run
    assert len(calls) > 1
    np.testing.assert_array_equal(pixels, expected)


def test_two_stores_joined_stay_on_disk(tmp_path, monkeypatch):
    folder = make_split_folder(tmp_path / "imgs", train=6, val=3)
    scan = _scan(folder)
    train, val = (Examples.from_scan(scan.parts[s]) for s in ("train", "validation"))
    assert train.source is not val.source  # two stores
    joined = train.concatenate(val)
    assert not joined.in_memory and len(joined) == 18
    monkeypatch.setattr(Examples, "read_all", _forbidden)  # nothing loads a whole split
    np.testing.assert_array_equal(joined.labels, np.r_[train.labels, val.labels])
    assert joined.paths == train.paths + val.paths
    expected = {path: read_image(path, (16, 16)) for path in joined.paths}
    for position in (0, 11, 12, 17):
        assert (joined.image(position) == expected[joined.paths[position]]).all()
    monkeypatch.setenv("KZOO_IN_MEMORY_LIMIT_MB", str(joined.nbytes / 2 / (1 << 20)))
    monkeypatch.setattr(pipeline, "BLOCK_BYTES", 4 * 16 * 16 * 3)  # blocks across the seam
    assert streams(joined)
    batches = [(x.numpy(), y.numpy()) for x, y in raw_batches(joined, 5, shuffle_seed=1)]
    pixels, labels = np.concatenate([x for x, _ in batches]), np.concatenate([y for _, y in batches])
    assert len(pixels) == 18
    for image, label in zip(pixels, labels):
        match = [p for p, e in expected.items() if (e == image).all()]
        assert len(match) == 1 and joined.labels[joined.paths.index(match[0])] == label


def _forbidden(*args, **kwargs):
    raise AssertionError("a whole split was loaded into memory")


def test_a_new_decoder_or_pillow_makes_a_new_store(tmp_path, monkeypatch):
    folder = make_clean_folder(tmp_path / "imgs", per_class=4)
    first = _scan(folder)
    hashes = first.parts["train"].store.hashes
    key = store_key(FRAMING, hashes)
    assert _scan(folder).stats.cache == "hit"
    monkeypatch.setattr(images, "DECODE_VERSION", images.DECODE_VERSION + 1)
    assert store_key(FRAMING, hashes) != key
    rebuilt = _scan(folder)  # every image decoded again: no pixels of the old decoder reused
    assert (rebuilt.stats.cache, rebuilt.stats.decoded, rebuilt.stats.reused) == ("built", 8, 0)
    assert rebuilt.parts["train"].store.path != first.parts["train"].store.path
    monkeypatch.setattr(PIL, "__version__", "0.0-elsewhere")
    assert _scan(folder).stats.decoded == 8
