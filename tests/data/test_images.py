"""Reading a messy image folder: every file is decoded correctly or skipped with a reason."""

from __future__ import annotations

import numpy as np
import pytest
from messy_images import MESSY_DECODED, MESSY_SKIPPED, make_clean_folder, write_messy_files
from PIL import Image

from kzoo.data.datasets import image_folder
from kzoo.data.images import (
    UnreadableImage,
    crop_box,
    describe_skipped,
    list_image_files,
    read_image,
    read_images,
)
from kzoo.errors import KzooError


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    return write_messy_files(tmp_path_factory.mktemp("messy"))


def test_every_messy_file_is_decoded_or_skipped_with_a_reason(messy):
    files, passed_over = list_image_files(messy)
    images, kept, unreadable = read_images(files, (32, 32))
    decoded = sorted(files[i].name for i in kept)
    skipped = {Skipped.path.split("/")[-1]: Skipped.reason for Skipped in passed_over + unreadable}
    assert decoded == sorted(MESSY_DECODED)
    assert sorted(skipped) == sorted(MESSY_SKIPPED)
    assert images.shape == (len(MESSY_DECODED), 32, 32, 3) and images.dtype == np.uint8
    assert skipped["empty.jpg"] == "empty file (0 bytes)"
    assert "truncated" in skipped["truncated.jpg"]
    assert skipped["notes.txt"] == "not an image (.txt file)"
    assert skipped[".DS_Store"] == skipped["._rgb.jpg"] == "hidden file"


def test_exif_orientation_is_applied(messy):
    pixels = read_image(messy / "exif_rotated.jpg")
    # Stored 40 wide x 20 high, left half red; orientation 6 turns it upright: red on top.
    assert pixels.shape == (40, 20, 3)
    assert pixels[2, 10, 0] > 200 and pixels[2, 10, 2] < 50
    assert pixels[-3, 10, 2] > 200 and pixels[-3, 10, 0] < 50


def test_modes_become_rgb(messy):
    cyan = read_image(messy / "cmyk.jpg")
    assert cyan.shape == (30, 40, 3) and np.abs(cyan[15, 20].astype(int) - [0, 255, 255]).max() < 8
    gray = read_image(messy / "gray.png")
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    assert (read_image(messy / "sixteen_bit.png") == 255).all()  # 65535 -> 255, not clipped junk
    palette = read_image(messy / "palette.gif")
    original = np.asarray(Image.open(messy / "palette.gif").convert("RGB"))
    assert (palette == original).all()
    assert read_image(messy / "animated.gif").shape == (20, 20, 3)  # the first frame


def test_transparent_pixels_lie_on_white(tmp_path):
    image = Image.new("RGBA", (4, 4), (255, 0, 0, 255))
    image.putpixel((0, 0), (0, 0, 0, 0))
    image.save(tmp_path / "hole.png")
    pixels = read_image(tmp_path / "hole.png")
    assert tuple(pixels[0, 0]) == (255, 255, 255) and tuple(pixels[3, 3]) == (255, 0, 0)


def test_sizes_and_grayscale_channel(messy):
    assert (read_image(messy / "tiny_1x1.png", size=(8, 8)) == [10, 200, 30]).all()
    assert read_image(messy / "big_3000x2000.jpg", size=(24, 36)).shape == (24, 36, 3)
    assert read_image(messy / "rgb.jpg", size=(16, 16), channels=1).shape == (16, 16, 1)


def test_unreadable_files_raise_with_the_reason(messy, tmp_path):
    with pytest.raises(UnreadableImage, match="empty file"):
        read_image(messy / "empty.jpg")
    with pytest.raises(UnreadableImage, match="not an image Pillow can read"):
        read_image(messy / "notes.txt")
    with pytest.raises(UnreadableImage, match="no such file"):
        read_image(tmp_path / "missing.jpg")


def test_describe_skipped_counts_and_shortens(messy):
    files, passed_over = list_image_files(messy)
    _, _, unreadable = read_images(files, (8, 8))
    text = describe_skipped(passed_over + unreadable, limit=3, root=messy)
    assert text.startswith("5 files skipped:")
    assert "... and 2 more" in text and str(messy) not in text


def test_image_folder_skips_bad_files_and_keeps_going(tmp_path):
    make_clean_folder(tmp_path / "train", per_class=4)
    write_messy_files(tmp_path / "train" / "ants" / "junk")
    make_clean_folder(tmp_path / "val", per_class=2, seed=3)
    splits = image_folder(tmp_path, image_size=(32, 32))
    assert splits.class_names == ["ants", "bees"]
    assert splits.sizes == {"train": 8 + len(MESSY_DECODED), "validation": 4}
    assert not splits.has_test and splits.test_split == "validation"
    assert len(splits.skipped) == len(MESSY_SKIPPED)
    images, labels = next(iter(splits.train.batch(64)))
    assert images.shape[1:] == (32, 32, 3) and images.dtype.name == "uint8"
    assert sorted(np.bincount(labels.numpy())) == [4, 4 + len(MESSY_DECODED)]


def test_flat_folder_gets_a_seeded_validation_split(tmp_path):
    make_clean_folder(tmp_path, per_class=10)
    first = image_folder(tmp_path, (16, 16), validation_split=0.25, seed=3).examples
    again = image_folder(tmp_path, (16, 16), validation_split=0.25, seed=3).examples
    other = image_folder(tmp_path, (16, 16), validation_split=0.25, seed=4).examples
    assert len(first["validation"].paths) == 6 and len(first["train"].paths) == 14  # 3 a class
    assert first["validation"].paths == again["validation"].paths
    assert first["validation"].paths != other["validation"].paths
    assert not set(first["validation"].paths) & set(first["train"].paths)


def test_a_class_of_only_broken_files_is_an_error_before_training(tmp_path):
    make_clean_folder(tmp_path, per_class=3)
    (tmp_path / "wasps").mkdir()
    (tmp_path / "wasps" / "empty.jpg").write_bytes(b"")
    (tmp_path / "wasps" / "readme.txt").write_text("todo")
    with pytest.raises(KzooError, match=r"wasps.*holds no readable images.*2 files skipped"):
        image_folder(tmp_path, (16, 16))


@pytest.mark.parametrize("layout", ["single class", "no class folders", "empty"])
def test_too_few_classes_or_no_images_is_a_clear_error(tmp_path, layout):
    if layout == "single class":
        make_clean_folder(tmp_path, classes=("ants",), per_class=3)
    elif layout == "no class folders":
        make_clean_folder(tmp_path, classes=("ants",), per_class=3)
        for path in (tmp_path / "ants").iterdir():
            path.rename(tmp_path / path.name)
        (tmp_path / "ants").rmdir()
    with pytest.raises(KzooError, match="expected at least 2, one folder per class") as error:
        image_folder(tmp_path, (16, 16))
    if layout == "no class folders":
        assert "3 images lie directly in it" in str(error.value)


def test_validation_classes_must_exist_in_train(tmp_path):
    make_clean_folder(tmp_path / "train", per_class=2)
    make_clean_folder(tmp_path / "val", classes=("ants", "bees", "wasps"), per_class=1)
    with pytest.raises(KzooError, match="wasps"):
        image_folder(tmp_path, (16, 16))


def test_center_crop_keeps_the_middle_without_distortion(tmp_path):
    image = Image.new("RGB", (80, 40), (0, 0, 255))  # wide: blue, a red square in the middle
    image.paste((255, 0, 0), (30, 10, 50, 30))
    image.save(tmp_path / "wide.png")
    assert crop_box(80, 40, (10, 10), None) == (0.0, 0.0, 80.0, 40.0)
    assert crop_box(80, 40, (10, 10), 1.0) == (20.0, 0.0, 60.0, 40.0)  # the central square
    assert crop_box(80, 40, (10, 10), 0.5) == (30.0, 10.0, 50.0, 30.0)
    middle = read_image(tmp_path / "wide.png", size=(10, 10), center_crop=0.5)
    inner = middle[1:-1, 1:-1]  # edge pixels blend with what lies just outside the box
    assert (inner[..., 0] > 200).all() and (inner[..., 2] < 50).all()
    squashed = read_image(tmp_path / "wide.png", size=(10, 10))
    assert squashed[5, 0, 2] > 200  # the blue border is still there
    assert read_image(tmp_path / "wide.png", size=(6, 12), center_crop=0.875).shape == (6, 12, 3)
    with pytest.raises(KzooError, match="center_crop"):
        crop_box(80, 40, (10, 10), 1.5)
