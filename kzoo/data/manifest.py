"""A folder's manifest: what was learnt of each file, keyed on size and mtime."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from kzoo.data.locations import cache_dir
from kzoo.files import write_atomically

MANIFEST_FIELDS = ("path", "split", "label", "size", "mtime_ns", "sha256", "status", "reason",
                    "width", "height", "mode")


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


def folder_state(folder: Path) -> Path:
    return cache_dir() / "folders" / folder_id(folder)


def read_manifest(folder: Path) -> dict[str, FileRecord]:
    """The folder's manifest from an earlier scan, by relative path ({} if none)."""
    path = folder_state(folder) / "manifest.csv"
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
    path = folder_state(folder) / "manifest.csv"

    def write(partial: Path) -> None:
        with partial.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=MANIFEST_FIELDS)
            writer.writeheader()
            writer.writerows(dataclasses.asdict(record) for record in records)

    write_atomically(path, write)
    (path.parent / "folder.txt").write_text(str(folder.resolve()) + "\n")
    return path



