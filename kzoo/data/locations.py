"""Where kzoo keeps its cache: the cache directory and scratch folders."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def cache_dir() -> Path:
    """The kzoo cache directory: ``$KZOO_CACHE_DIR``, default ``~/.cache/kzoo``."""
    return Path(os.environ.get("KZOO_CACHE_DIR") or Path.home() / ".cache" / "kzoo").expanduser()


def scratch_dir() -> Path:
    """A fresh temporary folder under the cache directory (for backbone features)."""
    root = cache_dir() / "tmp"
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="run-", dir=root))

