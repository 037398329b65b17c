"""Tiny generated image folders for the fine-tuning tests: clean ones, and the messy files a
real user's folder holds (every kind the loader must decode or skip)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

# file name -> decodes? (the rest are skipped with a reason)
MESSY_DECODED = (
    "rgb.jpg", "gray.png", "rgba.png", "cmyk.jpg", "palette.gif", "exif_rotated.jpg",
    "tiny_1x1.png", "big_3000x2000.jpg", "sixteen_bit.png", "png_named.jpg", "animated.gif",
)
MESSY_SKIPPED = ("truncated.jpg", "empty.jpg", "notes.txt", ".DS_Store", "._rgb.jpg")


def class_image(label: int, seed: int, size: int = 48) -> Image.Image:
    """A noisy picture whose colour says its class: reddish (0), bluish (1), greenish (2)..."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 90, (size, size, 3))
    pixels[..., label % 3] += 150
    return Image.fromarray(pixels.astype(np.uint8), "RGB")


def make_clean_folder(root: Path, classes=("ants", "bees"), per_class=6, seed=0) -> Path:
    """``root/<class>/NN.jpg`` with ``per_class`` coloured images a class."""
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            class_image(label, seed * 1000 + label * 100 + index).save(root / name / f"{index:02d}.jpg")
    return root


def make_split_folder(root: Path, classes=("ants", "bees"), train=6, val=3) -> Path:
    """``root/train/<class>/`` and ``root/val/<class>/``, clean."""
    make_clean_folder(root / "train", classes, train, seed=1)
    make_clean_folder(root / "val", classes, val, seed=2)
    return root


def _jpeg_bytes(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **options)
    return buffer.getvalue()


def write_messy_files(folder: Path) -> Path:
    """One file of every awkward kind (see ``MESSY_DECODED`` and ``MESSY_SKIPPED``)."""
    folder.mkdir(parents=True, exist_ok=True)
    base = class_image(0, 7)
    base.save(folder / "rgb.jpg")
    base.convert("L").save(folder / "gray.png")
    rgba = base.convert("RGBA")
    rgba.putalpha(Image.new("L", base.size, 128))
    rgba.save(folder / "rgba.png")
    Image.new("CMYK", (40, 30), (255, 0, 0, 0)).save(folder / "cmyk.jpg")  # pure cyan
    base.convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(folder / "palette.gif")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    wide = Image.new("RGB", (40, 20), (255, 0, 0))
    wide.paste((0, 0, 255), (20, 0, 40, 20))  # left half red, right half blue
    wide.save(folder / "exif_rotated.jpg", exif=exif.tobytes(), quality=95)
    Image.new("RGB", (1, 1), (10, 200, 30)).save(folder / "tiny_1x1.png")
    big = Image.linear_gradient("L").resize((3000, 2000)).convert("RGB")
    big.save(folder / "big_3000x2000.jpg", quality=70)
    Image.fromarray(np.full((16, 16), 65535, dtype=np.uint16)).save(folder / "sixteen_bit.png")
    with open(folder / "png_named.jpg", "wb") as handle:  # PNG content, .jpg name
        base.save(handle, "PNG")
    frames = [Image.new("P", (20, 20), color) for color in (1, 2, 3)]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=50)
    (folder / "truncated.jpg").write_bytes(_jpeg_bytes(base)[:600])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.txt").write_text("photos from the trip\n")
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(64))
    (folder / "._rgb.jpg").write_bytes(b"\x00\x05\x16\x07" + bytes(60))  # macOS AppleDouble
    return folder


def write_mobilenet_weights(path: Path, side: int = 64) -> Path:
    """A MobileNetV2 (alpha 0.35) no-top weights file standing in for ImageNet's: random
    kernels, BatchNorm statistics moved off their defaults (so "unchanged" means something) and
    small positive offsets, so the features of this untrained backbone are not all zero.
    """
    import keras

    backbone = keras.applications.MobileNetV2(alpha=0.35, include_top=False, weights=None,
                                              input_shape=(side, side, 3))
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(np.full(layer.moving_mean.shape, 0.05, "float32"))
            layer.moving_variance.assign(np.full(layer.moving_variance.shape, 0.8, "float32"))
            layer.beta.assign(np.full(layer.beta.shape, 0.2, "float32"))
    backbone.save_weights(path)
    return path


def write_informative_mobilenet_weights(path: Path, images: np.ndarray, side: int = 64) -> Path:
    """A MobileNetV2 (alpha 0.35) no-top weights file whose random features still tell
    images apart: each BatchNorm's statistics are those of its input on ``images`` (uint8,
    ``side`` pixels), every layer below already normalized so, so the signal is neither lost
    nor saturated on the way up; a stand-in for ImageNet weights where the features must mean
    something."""
    import keras

    keras.utils.set_random_seed(0)
    backbone = keras.applications.MobileNetV2(alpha=0.35, include_top=False, weights=None,
                                              input_shape=(side, side, 3))
    scaled = np.asarray(images, "float32") / 127.5 - 1  # the builder's own input scaling
    batchnorms = [layer for layer in backbone.layers
                  if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in batchnorms:  # one pass in training mode: moving statistics := the batch's
        layer.momentum = 0.0
    backbone(scaled, training=True)
    for layer in batchnorms:
        layer.momentum = 0.99
    backbone.save_weights(path)
    return path
