"""Fuzzing image bytes: random truncations, bit flips and header edits of real small JPEG,
PNG, GIF, WebP and TIFF files, decoded by :func:`kzoo.data.images.decode_file`.

Each file ends as a uint8 array of the asked-for shape, or as :class:`UnreadableImage` (the
skip a scan records, with its reason on one line); never another exception, and never a
hang."""

from __future__ import annotations

import io
import signal

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from strategies import bounded, one_line

from kzoo.data.images import UnreadableImage, decode_file

FORMATS = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp", "TIFF": ".tif"}


def _originals() -> dict[str, bytes]:
    """One small image per format, in the modes those formats are met in."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (13, 17, 3)).astype("uint8")
    found = {}
    for name in FORMATS:
        image = Image.fromarray(pixels)
        options = {}
        if name == "GIF":
            image = image.convert("P")
        elif name == "PNG":
            image = image.convert("RGBA")
        elif name == "JPEG":  # with an EXIF orientation, so the upright path runs too
            exif = Image.Exif()
            exif[0x0112] = 6
            options["exif"] = exif
        buffer = io.BytesIO()
        image.save(buffer, format=name, **options)
        found[name] = buffer.getvalue()
    return found


ORIGINALS = _originals()


@st.composite
def damaged_files(draw):
    """A real file with one to three edits: cut short, bits flipped anywhere, header bytes
    overwritten (with random or extreme values), bytes inserted or removed."""
    name = draw(st.sampled_from(sorted(ORIGINALS)))
    data = bytearray(ORIGINALS[name])
    for _ in range(draw(st.integers(1, 3))):
        if not data:
            break
        edit = draw(st.sampled_from(["truncate", "flip", "header", "insert", "remove"]))
        at = draw(st.integers(0, len(data) - 1))
        if edit == "truncate":
            del data[at:]
        elif edit == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif edit == "header":
            at = draw(st.integers(0, min(len(data), 64) - 1))
            value = draw(st.one_of(st.binary(min_size=1, max_size=4),
                                   st.sampled_from([b"\xff", b"\x00", b"\xff\xff", b"\x7f\xff",
                                                    b"\xff\xff\xff\xff", b"\x00\x00"])))
            data[at:at + len(value)] = value
        elif edit == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        else:
            del data[at:at + draw(st.integers(1, 16))]
    return name, bytes(data)


def _alarm(signum, frame):
    raise TimeoutError("decoding took over 30 s: a hang")


@pytest.mark.parametrize("name", sorted(ORIGINALS))
def test_the_undamaged_files_decode(tmp_path, name):
    path = tmp_path / f"x{FORMATS[name]}"
    path.write_bytes(ORIGINALS[name])
    assert decode_file(path, size=(9, 11)).pixels.shape == (9, 11, 3)


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's notes on damaged metadata
@bounded(1000)
@given(damaged_files(), st.sampled_from([None, (9, 11), (32, 32)]), st.sampled_from([1, 3]),
       st.sampled_from([None, 0.875]))
def test_a_damaged_image_decodes_or_is_skipped_with_its_reason(tmp_path_factory, damaged, size,
                                                                channels, center_crop):
    name, data = damaged
    path = tmp_path_factory.mktemp("image") / f"damaged{FORMATS[name]}"
    path.write_bytes(data)
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(30)
    try:
        decoded = decode_file(path, size, channels, center_crop)
    except UnreadableImage as error:
        assert one_line(str(error)), repr(str(error))
        return
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    pixels = decoded.pixels
    assert pixels.dtype == np.uint8
    if size is not None:
        assert pixels.shape == (*size, channels)
    else:
        assert pixels.ndim == 3 and pixels.shape[2] == channels
        assert sorted(pixels.shape[:2]) == sorted((decoded.height, decoded.width))
