"""Read a user's image files robustly: each one is decoded to pixels or skipped with a reason.

A real folder is messy. Pillow decodes every file up front, so a bad one is found before
training starts, never in the middle of an epoch:

- EXIF-rotated photos are turned upright (``ImageOps.exif_transpose``);
- palette (GIF), grayscale, 16-bit, CMYK and alpha images become RGB (or grayscale);
  transparent pixels are laid on white, as a browser shows them on a white page;
- huge JPEGs are decoded at a reduced scale (``Image.draft``), then every image is resized
  (antialiased bilinear) to the model's input size, so a 1x1 and a 6000x4000 image both work,
  either whole (squashed) or as a central crop without distortion (``center_crop``);
- empty, truncated, corrupt and non-image files, and hidden files (``.DS_Store``, ``._x.jpg``,
  ``__MACOSX/``), are skipped, and each skip is a :class:`Skipped` with its reason, for the
  summary a run prints first.

>>> pixels = read_image("cat.jpg", size=(224, 224))      # uint8 (224, 224, 3)
>>> files, skipped = list_image_files("photos/cats")
"""

from __future__ import annotations

import hashlib
import io
import math
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from kzoo.errors import KzooError

IMAGE_EXTENSIONS = (
    ".jpg", ".jpeg", ".jfif", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff",
    ".ppm", ".pgm", ".pbm",
)
# Raise when a change to the decoding, framing (crop, resize) or mode conversion below changes
# the pixels of any file: every image store made before is then left unused, as after a Pillow
# upgrade (see :func:`decoder_version`).
DECODE_VERSION = 1
_HIDDEN_FOLDERS = ("__MACOSX",)
_WITH_ALPHA = ("RGBA", "LA", "PA", "RGBa", "La")


def decoder_version() -> str:
    """What decides a file's pixels, besides its bytes and the framing: this module's
    :data:`DECODE_VERSION` and Pillow's version."""
    import PIL

    return f"kzoo-decode-{DECODE_VERSION}/pillow-{PIL.__version__}"


class Skipped(NamedTuple):
    """A file that was not used, and why."""

    path: str
    reason: str


class UnreadableImage(KzooError):
    """A file that is not a decodable image; the message says why."""


class UnreadableFile(UnreadableImage):
    """A file whose bytes could not be read (no permission, an I/O error, gone): a fact about
    this moment, not about the file's content, so it is never remembered between scans."""


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name in _HIDDEN_FOLDERS


def list_image_files(folder: str | os.PathLike) -> tuple[list[Path], list[Skipped]]:
    """The image files under ``folder`` (recursively, sorted), and the files passed over.

    Hidden files and folders and files without an image extension are passed over, each with
    its reason. Whether an image file really decodes is :func:`read_image`'s job.
    """
    folder = Path(folder)
    files, skipped = [], []
    for root, dirs, names in os.walk(folder):
        for name in sorted(d for d in dirs if _is_hidden(d)):
            skipped.append(Skipped(str(Path(root) / name), "hidden folder"))
        dirs[:] = sorted(d for d in dirs if not _is_hidden(d))
        for name in sorted(names):
            path = Path(root) / name
            suffix = path.suffix.lower()
            if _is_hidden(name):
                skipped.append(Skipped(str(path), "hidden file"))
            elif not path.is_file():
                skipped.append(Skipped(str(path), "broken link or not a regular file"))
            elif suffix not in IMAGE_EXTENSIONS:
                kind = f"{suffix} file" if suffix else "no file extension"
                skipped.append(Skipped(str(path), f"not an image ({kind})"))
            else:
                files.append(path)
    return sorted(files), skipped


def _to_mode(image: Image.Image, channels: int) -> Image.Image:
    """RGB (``channels=3``) or grayscale (``channels=1``) from any Pillow mode."""
    if image.mode.startswith("I") or image.mode == "F":  # 16/32-bit integer or float pixels
        values = np.asarray(image, dtype=np.float64)
        if values.size and values.max() > 255:
            values = values / 257.0  # 16-bit range to 8-bit
        image = Image.fromarray(np.clip(values, 0, 255).astype(np.uint8), "L")
    if image.mode in _WITH_ALPHA or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return image.convert("RGB" if channels == 3 else "L")


def crop_box(width: int, height: int, size: tuple[int, int], center_crop: float | None):
    """The region of a ``width`` x ``height`` image that is resized to ``size`` = (height,
    width): all of it (``center_crop=None``: squashed), or the central ``center_crop`` fraction
    of the largest centred region with the target's aspect ratio (no distortion; 0.875 is the
    classic ImageNet evaluation framing).
    """
    if center_crop is None:
        return (0.0, 0.0, float(width), float(height))
    if not 0 < center_crop <= 1:
        raise KzooError(f"center_crop={center_crop!r} is invalid; expected a fraction in (0, 1] "
                        "or None (squash the whole image)")
    aspect = size[1] / size[0]
    box_w, box_h = (height * aspect, float(height)) if width / height > aspect else (float(width), width / aspect)
    box_w, box_h = box_w * center_crop, box_h * center_crop
    left, top = (width - box_w) / 2, (height - box_h) / 2
    return (left, top, left + box_w, top + box_h)


class DecodedFile(NamedTuple):
    """One image file read once: its framed pixels, content hash and what it was."""

    pixels: np.ndarray  # uint8 (height, width, channels)
    sha256: str  # of the file's bytes
    width: int  # as stored in the file
    height: int
    mode: str  # Pillow's mode as stored, e.g. RGB, L, P, CMYK, I;16


def _open_upright(source, size, channels, center_crop) -> tuple[Image.Image, str, tuple[int, int]]:
    """The decoded, upright, RGB/L image of ``source`` (a path or a file object), its mode and
    (width, height) as stored; :class:`UnreadableImage` with the reason where it cannot be
    decoded."""
    try:
        with Image.open(source) as image:
            mode, stored = image.mode, image.size
            if size is not None and image.format == "JPEG":
                side = math.ceil(max(size) / (center_crop or 1.0))
                image.draft(image.mode, (side, side))  # decode big JPEGs at a reduced scale
            image.load()
            return _to_mode(ImageOps.exif_transpose(image), channels), mode, stored
    except UnidentifiedImageError:
        raise UnreadableImage("not an image Pillow can read (wrong format or corrupt)") from None
    except Image.DecompressionBombError as error:
        raise UnreadableImage(f"too large to decode safely ({error})") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as error:
        raise UnreadableImage(f"corrupt, truncated or unsupported ({error})") from None


def _framed(image: Image.Image, size, channels, center_crop) -> np.ndarray:
    if size is not None:
        height, width = int(size[0]), int(size[1])
        box = crop_box(image.width, image.height, (height, width), center_crop)
        if image.size != (width, height) or box != (0.0, 0.0, width, height):
            image = image.resize((width, height), Image.Resampling.BILINEAR, box=box)
    return np.asarray(image, dtype=np.uint8).reshape(image.height, image.width, channels)


def frame_image(image: Image.Image, size: tuple[int, int] | None, channels: int,
                center_crop: float | None) -> np.ndarray:
    """An in-memory Pillow image framed exactly as a file's pixels are: upright, RGB or
    grayscale (transparency on white), the crop of :func:`crop_box` resized (bilinear) to
    ``size``, uint8 (height, width, channels)."""
    _check_channels(channels)
    return _framed(_to_mode(ImageOps.exif_transpose(image), channels), size, channels,
                   center_crop)


def _check_channels(channels: int) -> None:
    if channels not in (1, 3):
        raise KzooError(f"channels={channels!r} is invalid; expected 1 (grayscale) or 3 (RGB)")


def _read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UnreadableFile("no such file") from None
    except PermissionError:
        raise UnreadableFile("permission denied") from None
    except IsADirectoryError:
        raise UnreadableImage("a folder, not a file") from None
    except OSError as error:
        raise UnreadableFile(f"cannot be read ({error})") from None
    if not data:
        raise UnreadableImage("empty file (0 bytes)")
    return data


def read_image(
    path: str | os.PathLike,
    size: tuple[int, int] | None = None,
    channels: int = 3,
    center_crop: float | None = None,
) -> np.ndarray:
    """An image file as a uint8 array ``(height, width, channels)``, upright, resized to
    ``size`` = (height, width) if given, framed as :func:`crop_box` says. Raises
    :class:`UnreadableImage` with the reason.
    """
    return decode_file(path, size, channels, center_crop).pixels


def decode_file(
    path: str | os.PathLike,
    size: tuple[int, int] | None = None,
    channels: int = 3,
    center_crop: float | None = None,
) -> DecodedFile:
    """Read ``path`` once: hash its bytes, decode and frame it (as :func:`read_image`).
    Raises :class:`UnreadableImage` with the reason."""
    _check_channels(channels)
    data = _read_bytes(Path(path))
    digest = hashlib.sha256(data).hexdigest()
    image, mode, (width, height) = _open_upright(io.BytesIO(data), size, channels, center_crop)
    return DecodedFile(_framed(image, size, channels, center_crop), digest, width, height, mode)


def _try_read(path, size, channels, center_crop):
    try:
        return read_image(path, size, channels, center_crop), None
    except UnreadableImage as error:
        return None, Skipped(str(path), str(error))


def read_images(
    paths: Sequence[str | os.PathLike],
    size: tuple[int, int],
    channels: int = 3,
    center_crop: float | None = None,
    workers: int | None = None,
) -> tuple[np.ndarray, list[int], list[Skipped]]:
    """Decode ``paths`` (in threads) into one uint8 array ``(n, height, width, channels)``,
    each image framed as :func:`crop_box` says.

    Returns the array of the images that decoded, their indices in ``paths``, and the files
    skipped with their reasons.
    """
    height, width = int(size[0]), int(size[1])
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda p: _try_read(p, (height, width), channels, center_crop),
                                paths))
    kept = [index for index, (pixels, _) in enumerate(results) if pixels is not None]
    images = np.empty((len(kept), height, width, channels), dtype=np.uint8)
    for row, index in enumerate(kept):
        images[row] = results[index][0]
    return images, kept, [skip for _, skip in results if skip is not None]


def describe_skipped(skipped: Iterable[Skipped], limit: int = 10, root: str | os.PathLike | None = None) -> str:
    """One line per skipped file (at most ``limit``), after a count: ``3 files skipped: ...``."""
    skipped = list(skipped)
    if not skipped:
        return "no files skipped"

    def shown(path: str) -> str:
        if root is None:
            return path
        try:
            return str(Path(path).relative_to(root))
        except ValueError:
            return path

    noun = "file" if len(skipped) == 1 else "files"
    lines = [f"{len(skipped)} {noun} skipped:"]
    lines += [f"  {shown(skip.path)}: {skip.reason}" for skip in skipped[:limit]]
    if len(skipped) > limit:
        lines.append(f"  ... and {len(skipped) - limit} more")
    return "\n".join(lines)


# --- class-per-folder trees ---------------------------------------------------------------------


def class_folders(folder: str | os.PathLike) -> list[str]:
    """The class names of a class-per-folder tree: its visible sub-folders, sorted."""
    return sorted(p.name for p in Path(folder).iterdir() if p.is_dir() and not _is_hidden(p.name))
