"""Datasets as ``tf.data`` splits: MNIST, CIFAR-10, the logic gates, and image folders.

Every loader returns a :class:`Splits` of unbatched ``(image, label)`` datasets holding raw
pixel values; the models rescale them themselves. Where a dataset has no validation split one is
carved from the training data with a seeded shuffle, so it is the same on every run.

Where the data comes from, in order: ``data_dir`` (or ``$KZOO_DATA_DIR``), then Keras's own
download (skipped when ``$KZOO_OFFLINE`` is set). With neither, the error names the file to put
where.
"""

from __future__ import annotations

import difflib
import os
import pickle
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf

from kzoo.data.carve import carve_validation
from kzoo.data.images import IMAGE_EXTENSIONS, Skipped  # noqa: F401  (IMAGE_EXTENSIONS: re-exported)
from kzoo.data.locations import cache_dir
from kzoo.data.pipeline import Examples
from kzoo.data.scan import FolderScan, scan_folder
from kzoo.data.store import Framing
from kzoo.errors import KzooError

CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]
_PACKAGE_DATA = Path(__file__).resolve().parent / "assets"


@dataclass
class Splits:
    """A dataset's splits as :class:`kzoo.data.pipeline.Examples` (``train``, ``validation``, and
    ``test`` where the dataset has a test split of its own), plus what they hold.

    ``train``, ``validation`` and ``test`` are the same splits as unbatched ``tf.data``
    datasets of (raw pixels, label). A dataset without a test split has none: ``test`` is then
    the validation split, ``test_split`` says ``"validation"``, and its figures are
    validation figures.
    """

    examples: dict[str, Examples]
    class_names: list[str]
    skipped: list[Skipped] = field(default_factory=list)  # files of an image folder left out
    scan: FolderScan | None = None  # an image folder's scan: records, statistics, for the audit

    @property
    def has_test(self) -> bool:
        return "test" in self.examples

    @property
    def test_split(self) -> str:
        """The split that test figures come from: ``test``, or ``validation`` where there is
        no test split."""
        return "test" if self.has_test else "validation"

    @property
    def sizes(self) -> dict[str, int]:
        return {key: len(part) for key, part in self.examples.items()}

    @property
    def train(self) -> tf.data.Dataset:
        return self.examples["train"].dataset()

    @property
    def validation(self) -> tf.data.Dataset:
        return self.examples["validation"].dataset()

    @property
    def test(self) -> tf.data.Dataset:
        return self.examples[self.test_split].dataset()

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.examples["train"].row_shape


# --- where the data lives ---------------------------------------------------------------------


def data_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The local folders searched for data: ``data_dir``, then ``$KZOO_DATA_DIR``."""
    folders = [data_dir, os.environ.get("KZOO_DATA_DIR")]
    found = []
    for folder in folders:
        if not folder:
            continue
        path = Path(folder).expanduser()
        if not path.exists():
            raise KzooError(
                f"data directory {str(path)!r} does not exist; pass an existing folder to "
                "--data-dir / data_dir / KZOO_DATA_DIR"
            )
        found.append(path)
    return found


def _find(candidates: Sequence[str], folders: Sequence[Path]) -> Path | None:
    for folder in folders:
        for name in candidates:
            if (folder / name).exists():
                return folder / name
    return None


def _download(name: str, load: Callable[[], object], wanted: str, folders: Sequence[Path]):
    """Keras's downloader, turned into a clear error when it cannot run."""
    searched = ", ".join(str(f) for f in folders) or "no local folder given"
    advice = (
        f"no local copy of {name} was found (searched: {searched}). Put {wanted} in a folder and "
        "pass it with --data-dir (Python: data_dir=) or set KZOO_DATA_DIR"
    )
    if os.environ.get("KZOO_OFFLINE"):
        raise KzooError(f"{advice}; download skipped because KZOO_OFFLINE is set")
    try:
        return load()
    except Exception as error:  # Keras raises a bare Exception when a download fails
        raise KzooError(f"{advice}; the download failed too: {error}") from error


# --- splitting ----------------------------------------------------------------------------------


def _split_indices(count: int, validation_split: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if not 0 < validation_split < 1:
        raise KzooError(f"validation_split={validation_split!r} is invalid; expected 0 < v < 1")
    order = np.random.default_rng(seed).permutation(count)
    n_val = max(1, round(count * validation_split))
    if n_val >= count:
        raise KzooError(f"only {count} training examples: too few to carve a validation split")
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _from_arrays(x_train, y_train, x_test, y_test, class_names, validation_split, seed,
                 x_val=None, y_val=None) -> Splits:
    if x_val is None:
        keep, held = _split_indices(len(x_train), validation_split, seed)
        x_train, x_val, y_train, y_val = x_train[keep], x_train[held], y_train[keep], y_train[held]
    parts = {"train": (x_train, y_train), "validation": (x_val, y_val), "test": (x_test, y_test)}
    return Splits({key: Examples.from_arrays(x, y) for key, (x, y) in parts.items()},
                  class_names=list(class_names))


# --- named datasets --------------------------------------------------------------------------


def _mnist(path: Path | None, folders, validation_split, seed) -> Splits:
    if path is not None:
        with np.load(path) as data:
            arrays = data["x_train"], data["y_train"], data["x_test"], data["y_test"]
    else:
        import keras

        (x_train, y_train), (x_test, y_test) = _download(
            "mnist", keras.datasets.mnist.load_data, "mnist.npz (the Keras layout)", folders
        )
        arrays = x_train, y_train, x_test, y_test
    x_train, y_train, x_test, y_test = arrays
    x_train, x_test = x_train[..., None], x_test[..., None]  # (28, 28) -> (28, 28, 1)
    y_train, y_test = y_train.astype("int32"), y_test.astype("int32")
    return _from_arrays(x_train, y_train, x_test, y_test, [str(d) for d in range(10)],
                        validation_split, seed)


def _cifar10_pickles(folder: Path, validation_split, seed) -> Splits:
    def batch(name):
        with open(folder / name, "rb") as handle:
            data = pickle.load(handle, encoding="bytes")
        images = data[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return images, np.asarray(data[b"labels"], dtype="int32")

    parts = [batch(f"data_batch_{i}") for i in range(1, 6)]
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    x_test, y_test = batch("test_batch")
    return _from_arrays(x_train, y_train, x_test, y_test, CIFAR10_CLASSES, validation_split, seed)


def _extract_once(archive: Path) -> Path:
    """Unzip ``archive`` into the kzoo cache (once; a half-extracted copy is never used)."""
    cache = cache_dir()
    target = cache / archive.stem
    if not target.is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f".{archive.stem}-", dir=cache))
        try:
            with zipfile.ZipFile(archive) as handle:
                handle.extractall(partial)
            os.replace(partial, target)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return target


def _cifar10(folders, validation_split, seed, input_shape, progress) -> Splits:
    found = _find(["cifar10", "cifar10_jpg", "cifar-10-batches-py", "cifar10_jpg.zip"], folders)
    if found is None:
        import keras

        (x_train, y_train), (x_test, y_test) = _download(
            "cifar10", keras.datasets.cifar10.load_data,
            "cifar10_jpg.zip, a cifar10/ folder (train/ and test/ with one folder a class) or "
            "cifar-10-batches-py/", folders,
        )
        return _from_arrays(x_train, y_train.ravel().astype("int32"), x_test,
                            y_test.ravel().astype("int32"), CIFAR10_CLASSES, validation_split, seed)
    if found.name == "cifar-10-batches-py":
        return _cifar10_pickles(found, validation_split, seed)
    if found.suffix == ".zip":
        found = _extract_once(found)
    height, width, channels = input_shape or (32, 32, 3)
    splits = image_folder(found, image_size=(height, width), channels=channels,
                          validation_split=validation_split, seed=seed, progress=progress)
    if splits.class_names != CIFAR10_CLASSES:
        raise KzooError(
            f"{str(found)!r} is not CIFAR-10: its class folders are {', '.join(splits.class_names)}; "
            f"expected {', '.join(CIFAR10_CLASSES)} (to train on other classes, name the folder as "
            "the dataset instead of cifar10)"
        )
    return splits


_GATES = {
    "or": [0, 1, 1, 1],
    "and": [0, 0, 0, 1],
    "xor": [0, 1, 1, 0],
}


def _logic_gate(name: str) -> Splits:
    """The truth table; the training split repeats it 64 times so an epoch is not 1 step."""
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype="float32")
    y = np.array(_GATES[name], dtype="float32")[:, None]
    x_train, y_train = np.tile(x, (64, 1)), np.tile(y, (64, 1))
    return _from_arrays(x_train, y_train, x, y, ["false", "true"], 0.0, 0, x_val=x, y_val=y)


# --- image folders --------------------------------------------------------------------------


def find_image_folder(name: str | os.PathLike, folders: Sequence[Path] = ()) -> Path:
    """``name`` as a path if it is a folder, else the folder of that name in a data directory
    (``folders``, see :func:`data_dirs`); the path as given if neither exists.
    """
    folder = Path(name).expanduser()
    if not folder.is_dir() and os.sep not in str(name):  # a folder name inside a data directory
        folder = _find([str(name)], folders) or folder
    return folder


def image_folder(
    folder: str | os.PathLike,
    image_size: tuple[int, int] = (224, 224),
    channels: int = 3,
    validation_split: float = 0.1,
    seed: int = 0,
    center_crop: float | None = None,
    progress: bool = True,
) -> Splits:
    """A class-per-folder tree as :class:`Splits`, through the folder's image store (see
    :mod:`kzoo.data.scan`: scanned once, decoded once, streamed when large).

    The tree holds ``train/`` with ``val/`` (or ``validation/``) and/or ``test/``, or the class
    folders directly; without a validation folder a ``validation_split`` of each class's
    training images is held out, chosen by content hash and ``seed``
    (:func:`kzoo.data.carve.held_out`: stable as files are added). Without a test folder there is no test split. Files that are not images
    or do not decode are left out and listed in ``Splits.skipped``; ``center_crop`` frames the
    images as :func:`kzoo.data.images.crop_box` says.
    """
    framing = Framing(tuple(int(s) for s in image_size), channels, center_crop)
    scan = scan_folder(folder, framing, progress=progress)
    if "validation" not in scan.parts:
        scan = carve_validation(scan, validation_split, seed)
    examples = {key: Examples.from_scan(part) for key, part in scan.parts.items()}
    ordered = {key: examples[key] for key in ("train", "validation", "test") if key in examples}
    return Splits(ordered, scan.class_names, skipped=scan.skipped, scan=scan)


DATASETS = ("mnist", "mnist_sample", "cifar10", "or", "and", "xor")


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    validation_split: float = 0.1,
    seed: int = 0,
    input_shape: tuple[int, int, int] | None = None,
    progress: bool = True,
) -> Splits:
    """Load a named dataset (``mnist``, ``mnist_sample``, ``cifar10``, ``or``, ``and``, ``xor``)
    or an image folder (a path, or a folder name inside a data directory) as train /
    validation / test ``tf.data`` splits.

    Images read from files are resized to ``input_shape`` (height, width, channels), the input
    of the model they are for; in-memory arrays keep their shape. ``progress`` shows the scan
    of an image folder.

    >>> splits = load_dataset("mnist", data_dir="~/data")   # reads ~/data/mnist.npz
    """
    folders = data_dirs(data_dir)
    if name in _GATES:
        return _logic_gate(name)
    if name == "mnist_sample":
        return _mnist(_PACKAGE_DATA / "mnist_sample.npz", folders, validation_split, seed)
    if name == "mnist":
        return _mnist(_find(["mnist.npz"], folders), folders, validation_split, seed)
    if name == "cifar10":
        return _cifar10(folders, validation_split, seed, input_shape, progress)
    folder = find_image_folder(name, folders)
    if folder.is_dir() or os.sep in name:
        height, width, channels = input_shape or (224, 224, 3)
        return image_folder(folder, image_size=(height, width), channels=channels,
                            validation_split=validation_split, seed=seed, progress=progress)
    close = difflib.get_close_matches(name, DATASETS, n=2)
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    raise KzooError(
        f"unknown dataset {name!r}; {hint}expected one of {', '.join(DATASETS)} or the path of "
        "an image folder"
    )


def print_data_summary(splits: Splits) -> dict | None:
    """Print what an image folder's scan decoded and its short audit; the audit (``None`` for
    a dataset that is no folder)."""
    if splits.scan is None:
        return None
    from kzoo.data.audit import audit_scan, format_audit

    stats = splits.scan.stats
    rate = f" ({stats.decode_rate:.0f} images/s)" if stats.decode_rate else ""
    print(f"kzoo: scanned {stats.files} files in {stats.seconds:.1f}s: {stats.decoded} decoded"
          f"{rate}, {stats.reused} from the cache, {stats.skipped} skipped (cache {stats.cache})")
    report = audit_scan(splits.scan)
    print(format_audit(report))
    return report
