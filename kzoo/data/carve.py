"""A validation split carved from a folder's training images: per class, by content hash, so
every class with two or more images has validation images, and adding or removing a file moves
that file and at most one other of its class."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Sequence

import numpy as np

from kzoo.data.scan import FolderScan, SplitScan
from kzoo.errors import KzooError

SMALL_CLASS = 5  # fewer images of a class than this in a split: its figures are noise


def held_out(hashes: Sequence[str], paths: Sequence[str], labels: np.ndarray,
             validation_split: float, seed: int) -> np.ndarray:
    """Which files go to validation (a bool per file): of each class of ``n`` files, the
    ``round(n * validation_split)`` (half up; at least 1 and at most ``n - 1`` where ``n >= 2``,
    none where ``n == 1``) whose content hashes, salted with ``seed``, rank lowest (ties, copies
    of one file, by path).

    A file's rank depends on its own content alone, so a new file goes to validation only when
    it ranks among the lowest, and then pushes out at most one file; a count that grows by one
    takes in one more."""
    if not 0 < validation_split < 1:
        raise KzooError(f"validation_split={validation_split!r} is invalid; expected a fraction "
                        "0 < v < 1")
    labels = np.asarray(labels)
    held = np.zeros(len(labels), dtype=bool)

    def rank(index: int) -> tuple[str, str]:
        salted = hashlib.sha256(f"{seed}:{hashes[index]}".encode()).hexdigest()
        return salted, paths[index]

    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) < 2:
            continue
        count = min(len(members) - 1, max(1, int(len(members) * validation_split + 0.5)))
        held[sorted(members.tolist(), key=rank)[:count]] = True
    return held


def carve_validation(scan: FolderScan, validation_split: float, seed: int) -> FolderScan:
    """``scan`` with a validation split carved from its training images (:func:`held_out`):
    both read from the training split's store, and the carved files' records say
    ``validation``, so the audit counts and compares the splits as they are used."""
    train = scan.parts["train"]
    relative = [os.path.relpath(path, scan.folder) for path in train.paths]
    held = held_out([train.store.hashes[row] for row in train.rows], relative, train.labels,
                    validation_split, seed)
    if not held.any():
        raise KzooError(
            f"the {len(relative)} training images of {str(scan.folder)!r} are too few to carve "
            f"a validation split (validation_split={validation_split:g} needs 2 or more images "
            "of a class); add images, or a val/ folder with one folder per class")

    def part(mask: np.ndarray) -> SplitScan:
        return SplitScan(train.store, train.rows[mask], train.labels[mask],
                         [train.paths[i] for i in np.flatnonzero(mask)])

    carved = {relative[i] for i in np.flatnonzero(held)}
    records = [dataclasses.replace(r, split="validation")
               if r.split == "train" and r.path in carved else r for r in scan.records]
    parts = {"train": part(~held), "validation": part(held),
             **{split: p for split, p in scan.parts.items() if split != "train"}}
    return dataclasses.replace(scan, parts=parts, records=records, carved=True)
