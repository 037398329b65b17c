"""Scanning an image folder once: list, hash, check and decode into a store."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kzoo.data.images import (
    IMAGE_EXTENSIONS,
    Skipped,
    UnreadableFile,
    UnreadableImage,
    class_folders,
    decode_file,
    describe_skipped,
    list_image_files,
)
from kzoo.data.locations import cache_dir
from kzoo.data.manifest import FileRecord, read_manifest, write_manifest
from kzoo.data.rows import RowFile
from kzoo.data.store import Framing, ImageStore, previous_store, remember_store, store_key
from kzoo.errors import KzooError

SPLIT_FOLDERS = {"train": ("train",), "validation": ("val", "validation"), "test": ("test",)}

# --- scanning -----------------------------------------------------------------------------------


class Progress:
    """A one-line progress report per split on a terminal (a line every 10 % elsewhere)."""

    def __init__(self, split: str, total: int, enabled: bool = True):
        self.split, self.total, self.enabled = split, total, enabled and total > 0
        self.tty = sys.stderr.isatty()
        self.started = time.perf_counter()
        self.shown = -1

    def update(self, done: int, decoded: int, skipped: int, final: bool = False) -> None:
        if not self.enabled:
            return
        tenth = done * 10 // max(self.total, 1)
        if not (final or self.tty or tenth > self.shown):
            return
        if self.tty and not final and done % 64:
            return
        self.shown = tenth
        rate = decoded / max(time.perf_counter() - self.started, 1e-9)
        line = (f"kzoo: scanning {self.split}: {done}/{self.total} files, {decoded} decoded, "
                f"{skipped} skipped" + (f", {rate:.0f} images/s" if decoded else ""))
        end = "\n" if final or not self.tty else ""
        print(("\r" if self.tty else "") + line, end=end, file=sys.stderr, flush=True)


def _bounded_map(function, items: Sequence, workers: int) -> Iterator[tuple[int, Any]]:
    """``(index, function(item))`` in completion order, with at most a few items in flight, so
    results never pile up in memory."""
    if workers <= 1:
        for index, item in enumerate(items):
            yield index, function(item)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending, position = {}, 0
        while pending or position < len(items):
            while position < len(items) and len(pending) < 4 * workers:
                pending[pool.submit(function, items[position])] = position
                position += 1
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield pending.pop(future), future.result()


def decode_workers() -> int:
    """Threads that decode images: ``$KZOO_DECODE_WORKERS``, default one per core (Pillow and
    hashlib release the GIL while they work)."""
    return max(1, int(os.environ.get("KZOO_DECODE_WORKERS") or os.cpu_count() or 1))


@dataclass
class ScanStats:
    """What one scan did: files seen, decoded now, reused, and how long it took."""

    files: int = 0
    decoded: int = 0
    reused: int = 0
    skipped: int = 0
    seconds: float = 0.0
    stores_built: int = 0

    @property
    def cache(self) -> str:
        """``hit`` (no store built), ``built`` (every image decoded) or ``updated`` (only
        changed files decoded, the rest copied)."""
        if not self.stores_built:
            return "hit"
        return "built" if not self.reused else "updated"

    @property
    def decode_rate(self) -> float | None:
        return round(self.decoded / self.seconds, 1) if self.decoded and self.seconds else None

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "seconds": round(self.seconds, 2),
                "decode_rate": self.decode_rate, "cache": self.cache}


@dataclass
class SplitScan:
    """One split of a scanned folder: its store and, per kept image, the store row, label and
    file."""

    store: ImageStore
    rows: np.ndarray  # int64, store rows of the images that decoded, in listing order
    labels: np.ndarray  # int32 class indices
    paths: list[str]


@dataclass
class FolderScan:
    """A scanned class-per-folder tree: its splits, classes, every file's record, what was
    skipped, and what the scan did."""

    folder: Path
    framing: Framing
    class_names: list[str]
    parts: dict[str, SplitScan]
    records: list[FileRecord]
    stats: ScanStats = field(default_factory=ScanStats)
    carved: bool = False  # validation carved from train (kzoo.data.carve), not a val/ folder

    @property
    def skipped(self) -> list[Skipped]:
        return [Skipped(str(self.folder / r.path), r.reason) for r in self.records
                if r.status != "ok"]


def split_folders(folder: Path) -> dict[str, Path]:
    """The split folders of a tree: ``train/``, ``val/`` (or ``validation/``), ``test/``; or
    the tree itself as ``train`` when it holds the class folders directly."""
    found = {}
    for split, names in SPLIT_FOLDERS.items():
        path = next((folder / n for n in names if (folder / n).is_dir()), None)
        if path is not None:
            found[split] = path
    if not found:
        return {"train": folder}
    if "train" not in found:
        raise KzooError(
            f"image folder {str(folder)!r} has val/ or test/ but no train/ folder; add train/ "
            "with one folder per class, or pass a folder holding the class folders directly"
        )
    return found


def folder_classes(folder: Path, splits: dict[str, Path]) -> list[str]:
    """The class names (the training split's class folders), checked against the others."""
    train_dir = splits["train"]
    class_names = class_folders(train_dir)
    if len(class_names) < 2:
        loose = len(list_image_files(train_dir)[0]) if not class_names else 0
        hint = f" ({loose} images lie directly in it)" if loose else ""
        raise KzooError(
            f"image folder {str(train_dir)!r} has {len(class_names)} class folder(s) "
            f"({', '.join(class_names) or 'none'}){hint}; expected at least 2, one folder per "
            "class, named after the class"
        )
    for other in (splits.get("validation"), splits.get("test")):
        extra = sorted(set(class_folders(other)) - set(class_names)) if other else []
        if extra:
            raise KzooError(
                f"{str(other)!r} has class folder(s) {', '.join(extra)} that "
                f"{str(train_dir)!r} lacks; every class needs training images"
            )
    return class_names


def _list_split(folder: Path, split_dir: Path, split: str, class_names: Sequence[str]):
    """The candidate image files of a split, with their labels, and the files passed over."""
    files, labels, passed_over = [], [], []
    for index, name in enumerate(class_names):
        found, skipped = list_image_files(split_dir / name) if (split_dir / name).is_dir() else ([], [])
        files += found
        labels += [index] * len(found)
        passed_over += [FileRecord(os.path.relpath(s.path, folder), split, name, status="skipped",
                                   reason=s.reason) for s in skipped]
    return files, labels, passed_over


def _unchanged(record: FileRecord | None, stat: os.stat_result | None) -> bool:
    return (record is not None and stat is not None and record.sha256 != ""
            and record.size == stat.st_size and record.mtime_ns == stat.st_mtime_ns)


def scan_split(
    folder: Path,
    split: str,
    split_dir: Path,
    class_names: Sequence[str],
    framing: Framing,
    manifest: dict[str, FileRecord],
    stats: ScanStats,
    progress: bool = True,
) -> tuple[SplitScan, list[FileRecord]]:
    """Scan one split folder into an image store (reused, updated or built; see module doc)."""
    started = time.perf_counter()
    files, labels, records = _list_split(folder, split_dir, split, class_names)
    relative = [os.path.relpath(f, folder) for f in files]
    stats_of = []
    for path in files:
        try:
            stats_of.append(path.stat())
        except OSError:
            stats_of.append(None)
    known = [manifest.get(rel) if _unchanged(manifest.get(rel), st) else None
             for rel, st in zip(relative, stats_of)]
    store = None
    if all(known):
        key = store_key(framing, [record.sha256 for record in known])
        store = ImageStore.open(cache_dir() / "images" / key)
    if store is not None:
        new_records = [dataclasses.replace(r, split=split, label=class_names[lab])
                       for r, lab in zip(known, labels)]
        stats.reused += int(store.ok.sum())
    else:
        store, new_records = _build_store(folder, split, files, relative, labels, stats_of, known,
                                          class_names, framing, stats, progress)
    stats.files += len(files) + len(records)
    stats.skipped += len(records) + int((~store.ok).sum())
    stats.seconds += time.perf_counter() - started
    records += new_records
    kept = np.flatnonzero(store.ok)
    scan = SplitScan(store, kept.astype(np.int64), np.asarray(labels, dtype=np.int32)[kept],
                     [str(files[i]) for i in kept])
    return scan, records


def _build_store(folder, split, files, relative, labels, stats_of, known, class_names, framing,
                 stats, progress) -> tuple[ImageStore, list[FileRecord]]:
    """Decode what changed (copying unchanged rows from the folder's previous store) into a new
    store, written under a partial name and renamed once complete."""
    images_root = cache_dir() / "images"
    images_root.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(images_root)
    previous = previous_store(folder, split, framing)
    reusable = {}
    if previous is not None:
        reusable = {h: row for row, (h, ok) in enumerate(zip(previous.hashes, previous.ok)) if ok}
    partial = Path(tempfile.mkdtemp(prefix=".partial-", dir=images_root))
    try:
        rows = RowFile.create(partial / "pixels.u8", framing.row_shape, np.uint8, len(files))
        hashes = [""] * len(files)
        ok = np.zeros(len(files), dtype=bool)
        records: list[FileRecord | None] = [None] * len(files)
        copy = [i for i, record in enumerate(known)
                if record is not None and (record.status != "ok" or record.sha256 in reusable)]
        for i in copy:  # unchanged files: the old verdict
            record = dataclasses.replace(known[i], split=split, label=class_names[labels[i]])
            records[i], hashes[i] = record, record.sha256
            ok[i] = record.status == "ok"
        reuse = [i for i in copy if ok[i]]
        for start in range(0, len(reuse), 256):  # and the old pixels, a chunk at a time
            chunk = reuse[start:start + 256]
            rows.write_rows(chunk, previous.rows.read([reusable[hashes[i]] for i in chunk]))
        stats.reused += int(ok.sum())
        todo = sorted(set(range(len(files))) - set(copy))
        report = Progress(split, len(todo), progress)
        decoded = failed = 0

        def inspect(index: int):
            try:
                return decode_file(files[index], framing.size, framing.channels,
                                   framing.center_crop), None
            except UnreadableFile as error:  # not the content's fault: tried again next scan
                return None, (str(error), "")
            except UnreadableImage as error:
                return None, (str(error), _unreadable_hash(relative[index], stats_of[index]))

        for done, (position, (result, reason)) in enumerate(_bounded_map(inspect, todo,
                                                                           decode_workers()), 1):
            index = todo[position]
            stat = stats_of[index]
            record = FileRecord(relative[index], split, class_names[labels[index]],
                                size=stat.st_size if stat else 0,
                                mtime_ns=stat.st_mtime_ns if stat else 0)
            if result is None:  # an empty sha256 is never taken as unchanged (_unchanged)
                record.status, (record.reason, record.sha256) = "skipped", reason
                failed += 1
            else:
                rows.write(index, result.pixels)
                ok[index] = True
                record.sha256, record.width, record.height, record.mode = (
                    result.sha256, result.width, result.height, result.mode)
                decoded += 1
            hashes[index], records[index] = record.sha256, record
            report.update(done, decoded, failed)
        report.update(len(todo), decoded, failed, final=True)
        stats.decoded += decoded
        stats.stores_built += 1
        store = ImageStore(partial, framing, hashes, ok)
        store.write_index()
        key = store_key(framing, hashes)
        target = images_root / key
        if ImageStore.open(target) is None:
            shutil.rmtree(target, ignore_errors=True)
            try:
                os.replace(partial, target)
            except OSError:  # another process put the same store there first
                if ImageStore.open(target) is None:
                    raise
        store.path = target
        remember_store(folder, split, framing, key)
        return store, records
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _remove_stale_partials(root: Path, hours: float = 6.0) -> None:
    """Remove stores left half-written by runs killed at least ``hours`` ago."""
    for partial in root.glob(".partial-*"):
        try:
            if time.time() - partial.stat().st_mtime > hours * 3600:
                shutil.rmtree(partial, ignore_errors=True)
        except OSError:
            pass


def _unreadable_hash(relative: str, stat: os.stat_result | None) -> str:
    """A stand-in for the content hash of a file that could not be decoded: a name that
    changes when the file does."""
    size, mtime = (stat.st_size, stat.st_mtime_ns) if stat else (0, 0)
    return "skipped:" + hashlib.sha256(f"{relative}:{size}:{mtime}".encode()).hexdigest()[:32]


def scan_folder(
    folder: str | os.PathLike,
    framing: Framing,
    progress: bool = True,
    splits: Sequence[str] | None = None,
) -> FolderScan:
    """Scan a class-per-folder tree (``train/``, ``val/``, ``test/``, or the class folders
    directly) at ``framing``: every split in an image store, the manifest updated.

    An empty class or a tree with fewer than two classes is an error before any decoding.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise KzooError(f"image folder {str(folder)!r} does not exist or is not a folder")
    found = split_folders(folder)
    class_names = folder_classes(folder, found)
    manifest = read_manifest(folder)
    stats = ScanStats()
    parts, records = {}, []
    for split, split_dir in found.items():
        if splits is not None and split not in splits:
            continue
        parts[split], more = scan_split(folder, split, split_dir, class_names, framing, manifest,
                                        stats, progress)
        records += more
        scanned = {record.path for record in records}
        write_manifest(folder, records + [r for p, r in manifest.items() if p not in scanned])
        # a val/ or test/ without some class's folder has no images of it (the audit warns)
        required = None if split == "train" else [n for n in class_names if (split_dir / n).is_dir()]
        _check_classes(split_dir, class_names, parts[split].labels, more, required)
    return FolderScan(folder, framing, class_names, parts, records, stats)


def scan_labelled(
    folder: str | os.PathLike, class_names: Sequence[str], framing: Framing, progress: bool = True
) -> tuple[SplitScan, list[Skipped]]:
    """Scan one folder of class folders (``folder/<class>/...``, label = the index in
    ``class_names``) into an image store, as :func:`scan_folder` does for a split; the scan
    and the files skipped."""
    folder = Path(folder).expanduser()
    manifest = read_manifest(folder)
    part, records = scan_split(folder, "labelled", folder, class_names, framing, manifest,
                               ScanStats(), progress)
    write_manifest(folder, records)
    present = [name for name in class_names if (folder / name).is_dir()]
    _check_classes(folder, class_names, part.labels, records, required=present)
    return part, [Skipped(str(folder / r.path), r.reason) for r in records if r.status != "ok"]


def _check_classes(split_dir: Path, class_names, labels: np.ndarray, records,
                   required: Sequence[str] | None = None) -> None:
    """An error where a class folder holds no readable image (of the ``required`` classes;
    default every one)."""
    counts = np.bincount(labels, minlength=len(class_names))
    required = class_names if required is None else required
    empty = [name for name, count in zip(class_names, counts) if count == 0 and name in required]
    if not empty:
        return
    skipped = [Skipped(r.path, r.reason) for r in records if r.status != "ok" and r.label in empty]
    where = ", ".join(repr(str(split_dir / name)) for name in empty)
    what = "holds no readable images" if len(empty) == 1 else "hold no readable images"
    detail = f" ({describe_skipped(skipped, limit=5)})" if skipped else ""
    raise KzooError(f"class folder {where} {what}{detail}; add images "
                    f"({', '.join(IMAGE_EXTENSIONS)}) or remove the folder")



