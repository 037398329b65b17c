"""Resolve a model's ``weights`` argument: ``"imagenet"``, a local file, or ``None``.

A bare file name that is not a file in the working directory is looked for in the same local
folders as ``"imagenet"`` (so a recipe can name ``mobilenet_v2_1.0_224_dequantized_no_top.h5``
and find it in ``--data-dir``'s ``weights/``).

``"imagenet"`` first looks for the file Keras would download, under the name Keras gives it, in
local folders (:func:`weights_dirs`): a ``data_dir`` given to :func:`search_weights_in`,
``$KZOO_WEIGHTS_DIR``, ``$KZOO_DATA_DIR/weights/``, and Keras's own cache
(``~/.keras/models``). Only if none holds it does Keras download it (skipped when
``$KZOO_OFFLINE`` is set). A local file is checked for existence and, where its expected hash
is known (sha256, or the md5 that Keras publishes), for integrity. Offline with no local file,
the error names the file, where to get it, and how to pass it.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from kzoo.errors import KzooError

if TYPE_CHECKING:  # finding a weights file needs no Keras: only building does
    import keras

# Expected hashes of published weight files, keyed by file name: sha256 (64 hex digits) where
# kzoo checked the file itself, otherwise the md5 (32 digits) Keras checks its downloads with.
KNOWN_HASHES = {
    "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5": (
        "94e9c4c290f48ac6637b3c34de169a6cd77cefc29b5fa573dd3018260f11f8ed"
    ),
    # MobileNetV2 1.0 ImageNet weights dequantized from TensorFlow's uint8 model (not Keras's
    # float file; see the README's weights section)
    "mobilenet_v2_1.0_224_dequantized_no_top.h5": (
        "10958475e0e67a8581cb3878f8c03d2a939394a59b9c62f6afb36b1f4c84547f"
    ),
    "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5": "4d473c1dd8becc155b73f8504c6f6626",
    "efficientnetb0_notop.h5": "50bc09e76180e00e4465e1a485ddc09d",
    "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5": "d3e8ec802a04aa4fc771ee12a9a9b836",
    "weights_mobilenet_v3_small_224_0.75_float_no_top_v2.h5": "ebdb5cc8e0b497cd13a7c275d475c819",
}
KNOWN_SHA256 = {name: digest for name, digest in KNOWN_HASHES.items() if len(digest) == 64}

_KERAS_STORAGE = "https://storage.googleapis.com/tensorflow/keras-applications/"


class WeightsFile(NamedTuple):
    """The ImageNet weights file of a backbone: Keras's file name and download address."""

    name: str
    url: str


def imagenet_file(application: str, **kwargs: Any) -> WeightsFile | None:
    """The no-top ImageNet weights file Keras downloads for ``application`` (its function name,
    e.g. ``"MobileNetV2"``) built with ``kwargs``; ``None`` where kzoo does not know it.
    """
    shape = kwargs.get("input_shape") or (224, 224, 3)
    if application == "ResNet50":
        name = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
        return WeightsFile(name, f"{_KERAS_STORAGE}resnet/{name}")
    if application == "MobileNetV2":
        rows = shape[0] if shape[0] == shape[1] and shape[0] in (96, 128, 160, 192, 224) else 224
        alpha = float(kwargs.get("alpha", 1.0))
        name = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_{rows}_no_top.h5"
        return WeightsFile(name, f"{_KERAS_STORAGE}mobilenet_v2/{name}")
    if application == "MobileNetV3Small":
        name = f"weights_mobilenet_v3_small_224_{kwargs.get('alpha', 1.0)}_float_no_top_v2.h5"
        return WeightsFile(name, f"{_KERAS_STORAGE}mobilenet_v3/{name}")
    if application == "EfficientNetB0":
        name = "efficientnetb0_notop.h5"
        return WeightsFile(name, f"https://storage.googleapis.com/keras-applications/{name}")
    return None


# --- where local weight files are looked for -----------------------------------------------------

_SEARCH: contextvars.ContextVar[tuple[Path, ...]] = contextvars.ContextVar(
    "kzoo_weights_search", default=()
)


@contextlib.contextmanager
def search_weights_in(*folders: str | os.PathLike | None) -> Iterator[None]:
    """Within the ``with`` block, ``weights="imagenet"`` also looks in ``folders`` and their
    ``weights/`` sub-folders (e.g. the ``--data-dir`` of a run) before downloading.
    """
    token = _SEARCH.set(_SEARCH.get() + tuple(Path(f).expanduser() for f in folders if f))
    try:
        yield
    finally:
        _SEARCH.reset(token)


def weights_dirs() -> list[Path]:
    """The folders ``weights="imagenet"`` searches, in order, before Keras downloads."""
    folders: list[Path] = []
    for folder in _SEARCH.get():
        folders += [folder / "weights", folder]
    if os.environ.get("KZOO_WEIGHTS_DIR"):
        folders.append(Path(os.environ["KZOO_WEIGHTS_DIR"]).expanduser())
    if os.environ.get("KZOO_DATA_DIR"):
        data = Path(os.environ["KZOO_DATA_DIR"]).expanduser()
        folders += [data / "weights", data]
    folders.append(Path(os.environ.get("KERAS_HOME", "~/.keras")).expanduser() / "models")
    return folders


def find_local_file(name: str) -> Path | None:
    """The first file called ``name`` in :func:`weights_dirs`, if any."""
    return next((folder / name for folder in weights_dirs() if (folder / name).is_file()), None)


# --- checking and loading --------------------------------------------------------------------


def sha256_of(path: str | os.PathLike) -> str:
    return _digest(path, "sha256")


def _digest(path: str | os.PathLike, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_weights_file(path: str | os.PathLike) -> Path:
    """An existing weights file whose hash matches the known one, if one is known."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise KzooError(
            f"weights file {str(path)!r} does not exist; pass weights='imagenet', None, or the "
            "path of a Keras weights file (.h5 / .weights.h5)"
        )
    expected = KNOWN_HASHES.get(path.name)
    if expected is not None:
        algorithm = "sha256" if len(expected) == 64 else "md5"
        actual = _digest(path, algorithm)
        if actual != expected:
            raise KzooError(
                f"weights file {str(path)!r} is corrupt or not the published file: {algorithm} "
                f"{actual} != expected {expected}; download it again (or rename your own "
                "weights file so it does not pose as the published one)"
            )
    return path


def load_application(
    application: Callable[..., keras.Model], weights: str | os.PathLike | None, **kwargs: Any
) -> keras.Model:
    """Build a ``keras.applications`` backbone with ``weights`` resolved as described above."""
    if weights is None:
        return application(weights=None, **kwargs)
    if weights == "imagenet":
        expected = imagenet_file(application.__name__, **kwargs)
        local = find_local_file(expected.name) if expected else None
        if local is not None:
            return _from_file(application, local, kwargs)
        if os.environ.get("KZOO_OFFLINE"):
            raise _offline_error(application.__name__, expected, "KZOO_OFFLINE is set")
        try:
            return application(weights="imagenet", **kwargs)
        except Exception as error:  # Keras raises a bare Exception on a failed download
            if "weights" not in str(error).lower() and "url" not in str(error).lower():
                raise
            raise _offline_error(application.__name__, expected, error) from error
    return _from_file(application, weights, kwargs)


def resolve_weights_file(weights: str | os.PathLike) -> Path:
    """``weights`` as a checked file: a path, or a bare file name found in the folders of
    :func:`weights_dirs` (``--data-dir``'s ``weights/`` among them)."""
    path = Path(weights).expanduser()
    if not path.is_file() and path.name == str(weights):
        path = find_local_file(path.name) or path
    return check_weights_file(path)


def _from_file(application, weights, kwargs) -> keras.Model:
    path = resolve_weights_file(weights)
    try:
        return application(weights=str(path), **kwargs)
    except (ValueError, OSError, KeyError) as error:
        raise KzooError(
            f"weights file {str(path)!r} does not fit {application.__name__} with "
            f"{kwargs}: {error}. Pass the no-top weights of this backbone and width"
        ) from error


def _offline_error(application_name: str, expected: WeightsFile | None, cause: object) -> KzooError:
    searched = ", ".join(str(folder) for folder in weights_dirs())
    if expected is None:
        what = f"the Keras ImageNet weights file (no top) of {application_name}"
    else:
        what = f"{expected.name} (from {expected.url})"
    return KzooError(
        f"could not get the ImageNet weights of {application_name} ({cause}). Offline? Download "
        f"{what} once, then pass weights=PATH (CLI: --weights PATH), or put it in one of the "
        f"folders searched: {searched} (e.g. $KZOO_DATA_DIR/weights/)"
    )
