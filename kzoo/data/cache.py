"""The cache as a user sees it: ``kzoo cache list|clear``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from kzoo.data.locations import cache_dir
from kzoo.data.manifest import folder_state
from kzoo.data.store import store_keys

# --- the cache, as a user sees it ----------------------------------------------------------------


def cache_entries() -> list[dict[str, Any]]:
    """Each folder the cache knows, with its image stores and their sizes."""
    root = cache_dir()
    entries = []
    for state in sorted((root / "folders").glob("*")):
        where = state / "folder.txt"
        stores = []
        for name, key in sorted(store_keys(state).items()):
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
        state = folder_state(Path(folder).expanduser())
        targets = [state, *(root / "images" / key for key in store_keys(state).values())]
    freed = 0
    for target in targets:
        if target.exists():
            freed += sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
            shutil.rmtree(target, ignore_errors=True)
    return freed



