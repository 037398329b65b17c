"""Flat files of fixed-shape rows, read and written at positions."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kzoo.errors import KzooError

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
                _read_fully(fd, flat[start:stop].reshape(-1), int(rows[start]) * self.row_bytes,
                            self.path)
        finally:
            os.close(fd)
        return out





def _read_fully(fd: int, out: np.ndarray, offset: int, path: Path) -> None:
    """Fill the uint8 array ``out`` from ``fd`` at ``offset``. One ``os.pread`` may return less
    than asked (on Linux, at most 0x7ffff000 bytes a call), so read until it is full; only a
    read that returns nothing means the file is shorter than expected."""
    done, size = 0, len(out)
    while done < size:
        data = os.pread(fd, min(size - done, 1 << 30), offset + done)
        if not data:
            raise KzooError(f"cache file {str(path)!r} is shorter than expected; "
                            "clear it with `kzoo cache clear` and run again")
        out[done:done + len(data)] = np.frombuffer(data, np.uint8)
        done += len(data)
