"""Writing files so that a reader never sees half of one: write beside, then rename.

Every file kzoo writes that a later run trusts (run directories, manifests, caches, tuning
tables) goes through :func:`write_atomically` or one of its shorthands. A process killed in the
middle leaves the old file (or none), never a truncated one.

>>> write_json(run_dir / "metrics.json", metrics)
"""

from __future__ import annotations

import csv
import json
import os
import secrets
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any


def write_atomically(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(partial)`` on a temporary file beside ``path``, flush it to disk, then
    rename it to ``path``. Returns ``path``. The file gets the mode a plain ``open`` would
    give it (0644 under the usual umask 022), not ``mkstemp``'s 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = _create_beside(path)
    try:
        write(Path(partial))
        with open(partial, "rb") as written:
            os.fsync(written.fileno())
        os.replace(partial, path)
    finally:
        Path(partial).unlink(missing_ok=True)
    return path


def _create_beside(path: Path) -> str:
    """A new, empty file with a fresh name beside ``path``, created with mode 0666 less the
    umask, as ``open(path, "w")`` would create ``path`` itself."""
    for _ in range(100):
        partial = path.parent / f".partial-{path.name}-{secrets.token_hex(4)}"
        try:
            os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return str(partial)
    raise FileExistsError(f"no free temporary name beside {path}")


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_atomically(path, lambda partial: partial.write_text(text, encoding="utf-8"))


def write_json(path: str | os.PathLike, data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2, default=float) + "\n")


def write_csv(path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    def write(partial: Path) -> None:
        with partial.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)

    return write_atomically(path, write)


def read_json(path: str | os.PathLike, default: Any = None) -> Any:
    """The JSON in ``path``, or ``default`` where it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return default
