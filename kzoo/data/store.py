"""Image stores: decoded, framed uint8 images on disk, keyed by content and framing."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kzoo.data.images import decoder_version
from kzoo.data.locations import cache_dir
from kzoo.data.manifest import folder_state
from kzoo.data.rows import RowFile
from kzoo.files import read_json, write_json


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



# --- image stores -----------------------------------------------------------------------------


STORE_FORMAT = 1  # the layout of a store on disk (index.json, pixels.u8)


def store_version() -> str:
    """The store format and the decoder: a change to either makes new stores."""
    return f"store-{STORE_FORMAT}/{decoder_version()}"


def store_key(framing: Framing, hashes: Sequence[str]) -> str:
    """A store's name: its format, decoder, framing and files' content hashes."""
    digest = hashlib.sha256(f"{store_version()}\n{framing.name}\n".encode())
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
    version: str = ""  # store_version() of the code that wrote it

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
            store = cls(path, framing, list(index["sha256"]), np.asarray(index["ok"], dtype=bool),
                        str(index.get("version", "")))
            if (path / "pixels.u8").stat().st_size != store.rows.row_bytes * len(store.hashes):
                return None
            return store
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def write_index(self) -> None:
        self.version = self.version or store_version()
        index = {"framing": dataclasses.asdict(self.framing), "version": self.version,
                 "sha256": self.hashes,
                 "ok": self.ok.tolist(), "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        (self.path / "index.json").write_text(json.dumps(index))


def store_keys(state: Path) -> dict[str, str]:
    """The latest store key of each split and framing, from a folder's cache state."""
    return read_json(state / "stores.json", {}) or {}


def previous_store(folder: Path, split: str, framing: Framing) -> ImageStore | None:
    """The folder's last store of ``split`` at ``framing``, to copy unchanged rows from; only
    one written by this store format and decoder (older pixels are never reused)."""
    key = store_keys(folder_state(folder)).get(f"{split}/{framing.name}")
    store = ImageStore.open(cache_dir() / "images" / key) if key else None
    return store if store is not None and store.version == store_version() else None


def remember_store(folder: Path, split: str, framing: Framing, key: str) -> None:
    keys = store_keys(folder_state(folder))
    keys[f"{split}/{framing.name}"] = key
    write_json(folder_state(folder) / "stores.json", keys)



