"""The validation split carved from a folder without val/: stratified by class, chosen by content
hash so it barely moves as files are added, audited per split, with duplicates across it
reported as leaks; and a val/ that lacks one of train/'s classes."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
from messy_images import class_image, make_clean_folder

from kzoo.data.audit import audit, audit_scan, audit_warnings, format_audit
from kzoo.data.datasets import image_folder
from kzoo.errors import KzooError

EIGHT = tuple(f"class{index}" for index in range(8))


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KZOO_CACHE_DIR", str(tmp_path / "cache"))


def _splits(folder, validation_split=0.2, seed=0):
    return image_folder(folder, (16, 16), validation_split=validation_split, seed=seed,
                        progress=False)


def _per_class(splits, split):
    examples = splits.examples[split]
    return Counter(splits.class_names[label] for label in examples.labels.tolist())


def test_carved_validation_is_stratified_and_stable_as_a_file_is_added(tmp_path):
    folder = make_clean_folder(tmp_path / "imgs", classes=EIGHT, per_class=30)
    before = _splits(folder)
    assert _per_class(before, "validation") == dict.fromkeys(EIGHT, 6)  # round(30 * 0.2) each
    assert _per_class(before, "train") == dict.fromkeys(EIGHT, 24)
    class_image(3, seed=4242).save(folder / "class3" / "new.jpg")
    after = _splits(folder)
    assert _per_class(after, "validation") == dict.fromkeys(EIGHT, 6)  # round(31 * 0.2) = 6
    moved = set(before.examples["validation"].paths) ^ set(after.examples["validation"].paths)
    assert len(moved) <= 2, sorted(moved)
    assert not set(after.examples["validation"].paths) & set(after.examples["train"].paths)
    again = _splits(folder)
    assert again.examples["validation"].paths == after.examples["validation"].paths


def test_a_rare_class_gets_validation_images_and_a_warning(tmp_path):
    folder = make_clean_folder(tmp_path / "imgs", classes=("ants", "bees"), per_class=30)
    for path in sorted((folder / "bees").iterdir())[2:]:
        path.unlink()  # 30 ants, 2 bees
    splits = _splits(folder)
    assert _per_class(splits, "validation") == {"ants": 6, "bees": 1}
    assert _per_class(splits, "train") == {"ants": 24, "bees": 1}
    report = audit_scan(splits.scan)  # counted per split after the carve
    assert report["splits"]["train"]["per_class"] == {"ants": 24, "bees": 1}
    assert report["splits"]["validation"]["per_class"] == {"ants": 6, "bees": 1}
    assert report["small_classes"] == {"train": {"bees": 1}, "validation": {"bees": 1}}
    small = [w for w in audit_warnings(report) if "fewer than 5 images" in w]
    assert len(small) == 1 and "train: bees 1; validation: bees 1" in small[0]
    table = format_audit(report)
    assert "validation" in table.splitlines()[0] and "warning: classes with fewer" in table
    # kzoo.audit shows the same carve when given the split
    assert audit(folder, image_size=16, validation_split=0.2)["splits"] == report["splits"]


def test_a_duplicate_across_the_carve_is_reported_as_a_leak(tmp_path):
    folder = make_clean_folder(tmp_path / "imgs", classes=("ants", "bees"), per_class=20)
    held = [p for p in _splits(folder).examples["validation"].paths if "/ants/" in p]
    copy = folder / "bees" / "copy.jpg"
    for source in held:  # a copy in the other class: ranked there by its own hash
        copy.write_bytes(Path(source).read_bytes())
        splits = _splits(folder)
        if str(copy) in splits.examples["train"].paths and source in splits.examples["validation"].paths:
            break
    else:
        pytest.fail("no copy of a validation image landed in train")
    report = audit_scan(splits.scan)
    relative = {os.path.relpath(source, folder), "bees/copy.jpg"}
    across = report["duplicates"]["across_splits"]
    assert len(across) == 1 and set(across[0]["files"]) == relative
    assert across[0]["splits"] == ["train", "validation"]
    assert report["duplicates"]["within_split"] == []
    assert report["duplicates"]["leaked_images"] == {"validation": 1}
    leak = [w for w in audit_warnings(report) if "byte-identical" in w]
    assert leak == [("1 image of the validation split carved from the training images is "
                     "byte-identical to other training images (listed in audit.json)")]


def test_val_without_one_of_trains_classes_is_accepted_with_a_warning(tmp_path):
    make_clean_folder(tmp_path / "train", classes=("a", "b", "c"), per_class=6)
    make_clean_folder(tmp_path / "val", classes=("a", "b"), per_class=5, seed=3)
    splits = _splits(tmp_path)
    assert splits.class_names == ["a", "b", "c"]
    assert _per_class(splits, "validation") == {"a": 5, "b": 5}
    report = audit_scan(splits.scan)
    assert report["splits"]["validation"]["per_class"] == {"a": 5, "b": 5, "c": 0}
    assert report["small_classes"] == {"validation": {"c": 0}}
    assert any("validation: c 0" in w for w in audit_warnings(report))
    assert "val/c" not in format_audit(report)


def test_a_class_of_one_image_stays_in_train_and_too_few_images_is_one_line(tmp_path):
    folder = make_clean_folder(tmp_path / "imgs", classes=("ants", "bees"), per_class=6)
    for path in sorted((folder / "bees").iterdir())[1:]:
        path.unlink()
    splits = _splits(folder)
    assert _per_class(splits, "validation") == {"ants": 1}
    assert _per_class(splits, "train") == {"ants": 5, "bees": 1}
    for path in sorted((folder / "ants").iterdir())[1:]:
        path.unlink()
    with pytest.raises(KzooError, match=r"the 2 training images of .* are too few to carve a "
                                        r"validation split .*add images, or a val/ folder"):
        _splits(folder)
