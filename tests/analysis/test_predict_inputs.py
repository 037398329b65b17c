"""``kzoo.predict`` and ``kzoo.explain`` take what a user holds: a path (never read one
character at a time), a list of paths, a NumPy image or batch, a PIL image, or a list mixing
these; ``kzoo predict`` fails (exit 2) when no file could be read. On a small LeNet-5 run."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import kzoo
from kzoo.cli.main import main as kzoo_cli
from kzoo.models.saving import save_model


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A LeNet-5 run over three classes whose images are center-cropped, as fine-tuned ones."""
    import keras

    keras.utils.set_random_seed(0)
    run_dir = tmp_path_factory.mktemp("runs") / "lenet"
    run_dir.mkdir()
    save_model(kzoo.build("lenet5", num_classes=3), run_dir / "model.keras",
               class_names=["a", "b", "c"], center_crop=0.875)
    return run_dir


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    """An RGB image (not the model's size or channels) as pixels and as a PNG file."""
    pixels = np.random.default_rng(1).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp("images") / "photo.png"
    Image.fromarray(pixels).save(path)
    return pixels, path


def test_a_single_path_is_one_image(run, photo, monkeypatch):
    _, path = photo
    monkeypatch.chdir(path.parent)  # "." would be a folder full of images if walked
    for single in (str(path), path, "photo.png"):
        results = kzoo.predict(run, single)
        assert [r.path for r in results] == [str(single)]
        assert results[0].error is None and len(results[0].top) == 3
    assert kzoo.predict(run, "missing.jpg")[0].error == "no such file or folder"
    assert len(kzoo.predict(run, (path, str(path)))) == 2


def test_arrays_and_pil_images_are_framed_as_files_are(run, photo):
    from kzoo.analysis.inference import image_framing, image_inputs, load_run, read_inputs

    pixels, path = photo
    model, _ = load_run(run)
    framing = image_framing(model)
    entries = image_inputs([path, pixels, pixels.astype("float32"), Image.fromarray(pixels),
                            Image.fromarray(pixels).convert("RGBA"), np.stack([pixels] * 2)])
    [(_, images, outcome)] = list(read_inputs(entries, framing, chunk=64))
    assert outcome == list(range(7)) and images.shape == (7, 28, 28, 1)
    for row in images[1:]:
        np.testing.assert_array_equal(row, images[0])  # each the file's pixels, exactly

    results = kzoo.predict(run, [path, np.stack([pixels] * 2), Image.fromarray(pixels),
                                 pixels, "missing.jpg"])
    assert [r.path for r in results] == [str(path), "array[1][0]", "array[1][1]", "image[2]",
                                         "array[3]", "missing.jpg"]
    assert all(r.top == results[0].top for r in results[1:5]) and results[5].error
    assert [r.path for r in kzoo.predict(run, np.stack([pixels] * 3))] == [
        "array[0]", "array[1]", "array[2]"]
    assert [r.path for r in kzoo.predict(run, Image.fromarray(pixels))] == ["image"]
    grey = kzoo.predict(run, pixels[..., :1].repeat(2, axis=0))  # one HxWx1 image
    assert [r.path for r in grey] == ["array"] and grey[0].error is None


@pytest.mark.parametrize("inputs, message", [
    (42, "inputs is a int, not images"),
    (b"photo.png", "inputs is a bytes, not images"),
    ({"photo.png"}, "inputs is a set, not images"),
    (["photo.png", {"x": 1}], r"inputs\[1\] is a dict, not images"),
    (np.zeros((5, 28, 28)), "array has shape 5x28x28; expected one image HxWxC or a batch"),
    (np.full((28, 28, 3), 300.0), "array holds values from 300 to 300; expected pixel values 0-255"),
    (np.array([["a"]]), "array holds <U1 values, not pixels"),
])
def test_other_inputs_are_one_line_errors(run, inputs, message):
    with pytest.raises(kzoo.KzooError, match=message) as caught:
        kzoo.predict(run, inputs)
    assert "\n" not in str(caught.value)


def test_pixels_scaled_to_0_1_are_warned_about(run, photo):
    pixels, _ = photo
    with pytest.warns(UserWarning, match="pixels scaled to 0-1"):
        kzoo.predict(run, pixels / 255.0)


def test_explain_takes_a_single_path_and_arrays(run, photo, tmp_path):
    pixels, path = photo
    results = kzoo.explain(run, str(path), output=tmp_path)
    assert results == [(str(path), tmp_path / "photo.gradcam.png", None)]
    results = kzoo.explain(run, np.stack([pixels] * 2), output=tmp_path)
    assert [(image, png.name) for image, png, _ in results] == [
        ("array[0]", "array[0].gradcam.png"), ("array[1]", "array[1].gradcam.png")]
    assert all(png.is_file() for _, png, _ in results)


def test_cli_predict_fails_when_no_file_could_be_read(run, photo, tmp_path, capsys):
    _, path = photo
    assert kzoo_cli(["predict", str(run), str(tmp_path / "missing.jpg")]) == 2
    captured = capsys.readouterr()
    missing = tmp_path / "missing.jpg"
    assert captured.err.splitlines() == [
        (f"kzoo: error: no image could be read: '{missing}': no such file or folder; pass image "
         "files or folders that hold images")]
    (tmp_path / "notes.txt").write_text("not an image")
    assert kzoo_cli(["predict", str(run), str(tmp_path / "notes.txt"), "missing.jpg"]) == 2
    assert "(and the 1 other files given)" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert kzoo_cli(["predict", str(run), str(tmp_path / "empty")]) == 2
    assert "found no image files in" in capsys.readouterr().err
    # Some read: the failures are listed, and the command succeeds.
    assert kzoo_cli(["predict", str(run), str(path), "missing.jpg"]) == 0
    captured = capsys.readouterr()
    assert [line.split() for line in captured.out.splitlines()][-1] == [
        "missing.jpg", "unreadable:", "no", "such", "file", "or", "folder"]
    assert "1 of 2 files could not be read" in captured.err
