"""Resolve a model's ``weights`` argument: ``"imagenet"``, a local file, or ``None``.

``"imagenet"`` goes through Keras's own download and cache (``~/.keras/models``). A local file is
checked for existence and, where its expected sha256 is known, for integrity. Offline with no
local file, the error says which file to fetch and how to pass it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Callable

import keras

from kzoo.errors import KzooError

# sha256 of published weight files kzoo has checked, keyed by file name.
KNOWN_SHA256 = {
    "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5": (
        "94e9c4c290f48ac6637b3c34de169a6cd77cefc29b5fa573dd3018260f11f8ed"
    ),
}


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_weights_file(path: str | os.PathLike) -> Path:
    """An existing weights file whose sha256 matches the known one, if any is known."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise KzooError(
            f"weights file {str(path)!r} does not exist; pass weights='imagenet', None, or the "
            "path of a Keras weights file (.h5 / .weights.h5)"
        )
    expected = KNOWN_SHA256.get(path.name)
    if expected is not None:
        actual = sha256_of(path)
        if actual != expected:
            raise KzooError(
                f"weights file {str(path)!r} is corrupt or not the published file: sha256 "
                f"{actual} != expected {expected}; download it again"
            )
    return path


def load_application(
    application: Callable[..., keras.Model], weights: str | os.PathLike | None, **kwargs: Any
) -> keras.Model:
    """Build a ``keras.applications`` backbone with ``weights`` resolved as described above."""
    if weights is None:
        return application(weights=None, **kwargs)
    if weights == "imagenet":
        if os.environ.get("KZOO_OFFLINE"):
            raise _offline_error(application.__name__, "KZOO_OFFLINE is set")
        try:
            return application(weights="imagenet", **kwargs)
        except Exception as error:  # Keras raises a bare Exception on a failed download
            if "weights" not in str(error).lower() and "url" not in str(error).lower():
                raise
            raise _offline_error(application.__name__, error) from error
    path = check_weights_file(weights)
    try:
        return application(weights=str(path), **kwargs)
    except (ValueError, OSError) as error:
        raise KzooError(
            f"weights file {str(path)!r} does not fit {application.__name__} with "
            f"{kwargs}: {error}"
        ) from error


def _offline_error(application_name: str, cause: object) -> KzooError:
    return KzooError(
        f"could not get the ImageNet weights of {application_name} ({cause}). Offline? Download "
        "the Keras weights file (no_top) for this model once, then pass weights=PATH (CLI: "
        "--weights PATH), or copy it into ~/.keras/models/ so weights='imagenet' finds it"
    )
