"""Image folders of any size: scan once, remember, cache the decoded pixels on disk, audit.

A class-per-folder tree is walked once. Every file whose size and modification time match the
folder's **manifest** keeps what was learnt of it before (content hash, status, reason, size,
mode); every other file is read once, hashed, checked and decoded (:mod:`kzoo.images`), in
parallel threads, with a progress line per split.

Decoded images are framed to the model's input and written, as uint8 rows, into an **image
store** on disk, keyed by the files' contents and the framing (size, channels, crop). A second
run over an unchanged folder decodes nothing; a changed, added or removed file changes the key,
and the new store copies every unchanged image from the old one, decoding only what changed.
Every run and tuning trial that reads the folder at that framing shares the store.

Everything lives under the kzoo cache directory (``$KZOO_CACHE_DIR``, default
``~/.cache/kzoo``)::

    folders/<folder id>/manifest.csv   path, split, label, size, mtime, sha256, status, reason...
    folders/<folder id>/stores.json    the latest store of each split and framing
    images/<key>/pixels.u8             rows of uint8 pixels, (height, width, channels) each
    images/<key>/index.json            the framing, and each row's file hash and status

A store is written under ``images/.partial-*`` and renamed into place when complete, and the
manifest is written to a temporary file and renamed, so a killed run leaves nothing that a
later run trusts. ``kzoo cache list|clear`` shows and frees the cache.

The store is a flat file read with positional reads rather than a memory map: pages of a
mapped file count towards the reading process's resident memory, so a memory map would make an
epoch over a large folder look as large as the folder.

>>> scan = scan_folder("photos/", Framing((224, 224), 3, 0.875))
>>> scan.parts["train"].labels, scan.skipped, audit(scan)["duplicates"]
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kzoo.errors import KzooError
from kzoo.files import read_json, write_atomically, write_json
from kzoo.images import (
    IMAGE_EXTENSIONS,
    Skipped,
    UnreadableImage,
    class_folders,
    decode_file,
    describe_skipped,
    list_image_files,
)

SPLIT_FOLDERS = {"train": ("train",), "validation": ("val", "validation"), "test": ("test",)}
_MANIFEST_FIELDS = ("path", "split", "label", "size", "mtime_ns", "sha256", "status", "reason",
                    "width", "height", "mode")


def cache_dir() -> Path:
    """The kzoo cache directory: ``$KZOO_CACHE_DIR``, default ``~/.cache/kzoo``."""
    return Path(os.environ.get("KZOO_CACHE_DIR") or Path.home() / ".cache" / "kzoo").expanduser()


@dataclass(frozen=True)
class Framing:
    """How images are framed for a model: ``size`` (height, width), ``channels`` (1 or 3) and
    ``center_crop`` (the kept central fraction, or ``None``: whole, squashed)."""

    size: tuple[int, int]
    channels: int = 3
    center_crop: float | None = None

    @property
    def row_shape(self) -> tuple[int, int, int]:
        return (int(self.size[0]), int(self.size[1]), int(self.channels))

    @property
    def name(self) -> str:
        crop = "whole" if self.center_crop is None else f"crop{self.center_crop:g}"
        return f"{self.size[0]}x{self.size[1]}x{self.channels}-{crop}"


# --- flat files of rows ------------------------------------------------------------------------


class RowFile:
    """A flat file of ``count`` rows of ``dtype`` and ``row_shape``, read and written with
    positional reads and writes (safe from several threads at once)."""

    def __init__(self, path: Path, row_shape: Sequence[int], dtype: Any = np.uint8, count: int = 0):
        self.path = Path(path)
        self.row_shape = tuple(int(s) for s in row_shape)
        self.dtype = np.dtype(dtype)
        self.count = int(count)
        self.row_bytes = int(np.prod(self.row_shape)) * self.dtype.itemsize

    @classmethod
    def create(cls, path: Path, row_shape, dtype, count: int) -> RowFile:
        """A new file of ``count`` zero rows (sparse until written)."""
        rows = cls(path, row_shape, dtype, count)
        with open(path, "wb") as handle:
            handle.truncate(rows.row_bytes * count)
        return rows

    def write(self, row: int, values: np.ndarray) -> None:
        self.write_rows([row], values[None])

    def write_rows(self, rows: Sequence[int], values: np.ndarray) -> None:
        """Write ``values[i]`` to row ``rows[i]``."""
        fd = os.open(self.path, os.O_WRONLY)
        try:
            for row, value in zip(rows, values):
                os.pwrite(fd, np.ascontiguousarray(value, dtype=self.dtype).tobytes(),
                          int(row) * self.row_bytes)
        finally:
            os.close(fd)

    def read(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """The given rows, in the given order; consecutive rows are read with one call."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), *self.row_shape), dtype=self.dtype)
        if not len(rows):
            return out
        flat = out.reshape(len(rows), -1).view(np.uint8)
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        fd = os.open(self.path, os.O_RDONLY)
        try:
            for start, stop in zip(np.r_[0, breaks], np.r_[breaks, len(rows)]):
                size = (stop - start) * self.row_bytes
                data = os.pread(fd, size, int(rows[start]) * self.row_bytes)
                if len(data) != size:
                    raise KzooError(f"cache file {str(self.path)!r} is shorter than expected; "
                                    "clear it with `kzoo cache clear` and run again")
                flat[start:stop] = np.frombuffer(data, np.uint8).reshape(stop - start, -1)
        finally:
            os.close(fd)
        return out


# --- the manifest -------------------------------------------------------------------------------


@dataclass
class FileRecord:
    """What is known of one file of a folder: a manifest row."""

    path: str  # relative to the folder
    split: str
    label: str
    size: int = 0
    mtime_ns: int = 0
    sha256: str = ""
    status: str = "ok"  # ok | skipped
    reason: str = ""
    width: int = 0
    height: int = 0
    mode: str = ""


def folder_id(folder: Path) -> str:
    return hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]


def _folder_state(folder: Path) -> Path:
    return cache_dir() / "folders" / folder_id(folder)


def read_manifest(folder: Path) -> dict[str, FileRecord]:
    """The folder's manifest from an earlier scan, by relative path ({} if none)."""
    path = _folder_state(folder) / "manifest.csv"
    if not path.is_file():
        return {}
    records = {}
    try:
        with path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                for key in ("size", "mtime_ns", "width", "height"):
                    row[key] = int(row[key] or 0)
                records[row["path"]] = FileRecord(**row)
    except (ValueError, TypeError, KeyError):
        return {}  # an unreadable manifest is redone, never trusted
    return records


def write_manifest(folder: Path, records: Iterable[FileRecord]) -> Path:
    path = _folder_state(folder) / "manifest.csv"

    def write(partial: Path) -> None:
        with partial.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=_MANIFEST_FIELDS)
            writer.writeheader()
            writer.writerows(dataclasses.asdict(record) for record in records)

    write_atomically(path, write)
    (path.parent / "folder.txt").write_text(str(folder.resolve()) + "\n")
    return path


# --- image stores -----------------------------------------------------------------------------


def _store_key(framing: Framing, hashes: Sequence[str]) -> str:
    digest = hashlib.sha256(framing.name.encode())
    for value in hashes:
        digest.update(value.encode() + b"\n")
    return digest.hexdigest()[:32]


@dataclass
class ImageStore:
    """Decoded images on disk: one uint8 row per file of a split (rows of files that did not
    decode stay zero), with each row's content hash."""

    path: Path
    framing: Framing
    hashes: list[str]
    ok: np.ndarray  # bool per row

    @property
    def rows(self) -> RowFile:
        return RowFile(self.path / "pixels.u8", self.framing.row_shape, np.uint8, len(self.hashes))

    @classmethod
    def open(cls, path: Path) -> ImageStore | None:
        """The complete store at ``path``, or ``None`` where there is none (or a broken one)."""
        try:
            index = json.loads((path / "index.json").read_text())
            framing = Framing(tuple(index["framing"]["size"]), index["framing"]["channels"],
                              index["framing"]["center_crop"])
            store = cls(path, framing, list(index["sha256"]), np.asarray(index["ok"], dtype=bool))
            if (path / "pixels.u8").stat().st_size != store.rows.row_bytes * len(store.hashes):
                return None
            return store
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def write_index(self) -> None:
        index = {"framing": dataclasses.asdict(self.framing), "sha256": self.hashes,
                 "ok": self.ok.tolist(), "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        (self.path / "index.json").write_text(json.dumps(index))


def _store_keys(state: Path) -> dict[str, str]:
    """The latest store key of each split and framing, from a folder's cache state."""
    return read_json(state / "stores.json", {}) or {}


def _previous_store(folder: Path, split: str, framing: Framing) -> ImageStore | None:
    key = _store_keys(_folder_state(folder)).get(f"{split}/{framing.name}")
    return ImageStore.open(cache_dir() / "images" / key) if key else None


def _remember_store(folder: Path, split: str, framing: Framing, key: str) -> None:
    keys = _store_keys(_folder_state(folder))
    keys[f"{split}/{framing.name}"] = key
    write_json(_folder_state(folder) / "stores.json", keys)


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
        key = _store_key(framing, [record.sha256 for record in known])
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
    previous = _previous_store(folder, split, framing)
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
            except UnreadableImage as error:
                return None, str(error)

        for done, (position, (result, reason)) in enumerate(_bounded_map(inspect, todo,
                                                                           decode_workers()), 1):
            index = todo[position]
            stat = stats_of[index]
            record = FileRecord(relative[index], split, class_names[labels[index]],
                                size=stat.st_size if stat else 0,
                                mtime_ns=stat.st_mtime_ns if stat else 0)
            if result is None:
                record.status, record.reason = "skipped", reason
                record.sha256 = _unreadable_hash(relative[index], stat)
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
        key = _store_key(framing, hashes)
        target = images_root / key
        if ImageStore.open(target) is None:
            shutil.rmtree(target, ignore_errors=True)
            try:
                os.replace(partial, target)
            except OSError:  # another process put the same store there first
                if ImageStore.open(target) is None:
                    raise
        store.path = target
        _remember_store(folder, split, framing, key)
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
        _check_classes(split_dir, class_names, parts[split].labels, more)
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


# --- the audit ----------------------------------------------------------------------------------


def audit(scan: FolderScan) -> dict[str, Any]:
    """Counts per class and split, the imbalance ratio, skipped files with reasons, exact
    duplicates (within a split, and across splits: leakage), image sizes and modes."""
    ok = [r for r in scan.records if r.status == "ok"]
    counts: dict[str, dict[str, int]] = {}
    for record in ok:
        counts.setdefault(record.split, dict.fromkeys(scan.class_names, 0))[record.label] += 1
    train = [v for v in counts.get("train", {}).values()]
    imbalance = (max(train) / min(train)) if train and min(train) > 0 else None
    by_hash: dict[str, list[FileRecord]] = defaultdict(list)
    for record in ok:
        by_hash[record.sha256].append(record)
    within, across = [], []
    for group in by_hash.values():
        if len(group) < 2:
            continue
        entry = {"sha256": group[0].sha256, "files": [f"{r.path}" for r in group],
                 "splits": sorted({r.split for r in group})}
        (across if len(entry["splits"]) > 1 else within).append(entry)
    leaked = Counter()
    for group in by_hash.values():
        if len({r.split for r in group}) > 1 and any(r.split == "train" for r in group):
            leaked.update(r.split for r in group if r.split != "train")

    def spread(values: list[int]) -> dict[str, float] | None:
        return ({"min": min(values), "median": statistics.median(values), "max": max(values)}
                if values else None)

    return {
        "folder": str(scan.folder),
        "class_names": scan.class_names,
        "splits": {split: {"images": sum(c.values()), "per_class": c} for split, c in counts.items()},
        "test_split": "test" in scan.parts,
        "imbalance_ratio": round(imbalance, 3) if imbalance else None,
        "skipped": [{"path": r.path, "reason": r.reason} for r in scan.records if r.status != "ok"],
        "duplicates": {"within_split": within, "across_splits": across,
                       "leaked_images": dict(leaked)},
        "width": spread([r.width for r in ok]),
        "height": spread([r.height for r in ok]),
        "modes": dict(Counter(r.mode for r in ok)),
        "scan": scan.stats.to_dict(),
    }


def audit_warnings(report: dict[str, Any]) -> list[str]:
    """The audit's findings worth a warning, each with its numbers."""
    warnings = []
    for split, count in sorted(report["duplicates"]["leaked_images"].items()):
        folder = {"validation": "val", "test": "test"}.get(split, split)
        warnings.append(f"{count} image{'s' if count != 1 else ''} of {folder}/ "
                        f"{'are' if count != 1 else 'is'} byte-identical to images of train/ "
                        "(listed in audit.json)")
    within = report["duplicates"]["within_split"]
    if within:
        extra = sum(len(entry["files"]) - 1 for entry in within)
        warnings.append(f"{extra} duplicate file{'s' if extra != 1 else ''} within a split "
                        f"({len(within)} groups, listed in audit.json)")
    ratio = report["imbalance_ratio"]
    if ratio and ratio >= 3:
        warnings.append(f"classes are imbalanced: the largest training class has {ratio:.1f}x "
                        "the images of the smallest (consider --class-weight balanced)")
    if not report["test_split"]:
        warnings.append("no test/ folder: there is no test split, and the validation figures "
                        "are the only held-out ones")
    return warnings


def format_audit(report: dict[str, Any], limit: int = 12) -> str:
    """The audit as a short table and its warnings."""
    names = report["class_names"]
    splits = list(report["splits"])
    width = max([len(n) for n in names] + [5])
    lines = [f"{'class':{width}}  " + "  ".join(f"{s:>10}" for s in splits)]
    for name in names[:limit]:
        lines.append(f"{name:{width}}  " + "  ".join(
            f"{report['splits'][s]['per_class'][name]:>10}" for s in splits))
    if len(names) > limit:
        lines.append(f"... and {len(names) - limit} more classes")
    lines.append(f"{'total':{width}}  " + "  ".join(f"{report['splits'][s]['images']:>10}"
                                                    for s in splits))
    if report["imbalance_ratio"]:
        lines.append(f"imbalance ratio (train, largest/smallest class): "
                     f"{report['imbalance_ratio']:.2f}")
    if report["width"]:
        w, h = report["width"], report["height"]
        lines.append(f"image sizes: width {w['min']}/{w['median']:g}/{w['max']}, height "
                     f"{h['min']}/{h['median']:g}/{h['max']} (min/median/max); modes "
                     + ", ".join(f"{m} {c}" for m, c in sorted(report["modes"].items())))
    lines.append(f"files skipped: {len(report['skipped'])}")
    lines += [f"warning: {text}" for text in audit_warnings(report)]
    return "\n".join(lines)


# --- the cache, as a user sees it ----------------------------------------------------------------


def cache_entries() -> list[dict[str, Any]]:
    """Each folder the cache knows, with its image stores and their sizes."""
    root = cache_dir()
    entries = []
    for state in sorted((root / "folders").glob("*")):
        where = state / "folder.txt"
        stores = []
        for name, key in sorted(_store_keys(state).items()):
            path = root / "images" / key
            size = sum(f.stat().st_size for f in path.glob("*") if f.is_file()) if path.is_dir() else 0
            stores.append({"split_framing": name, "key": key, "bytes": size})
        entries.append({"folder": where.read_text().strip() if where.is_file() else "?",
                        "id": state.name, "stores": stores})
    return entries


def cache_size() -> int:
    root = cache_dir()
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) if root.is_dir() else 0


def clear_cache(folder: str | os.PathLike | None = None) -> int:
    """Delete the cached stores and manifests (of one folder, or all); the bytes freed."""
    root = cache_dir()
    if folder is None:
        targets = [root / "images", root / "folders", root / "tmp"]
    else:
        state = _folder_state(Path(folder).expanduser())
        targets = [state, *(root / "images" / key for key in _store_keys(state).values())]
    freed = 0
    for target in targets:
        if target.exists():
            freed += sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
            shutil.rmtree(target, ignore_errors=True)
    return freed


def scratch_dir() -> Path:
    """A fresh temporary folder under the cache directory (for backbone features)."""
    root = cache_dir() / "tmp"
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="run-", dir=root))
