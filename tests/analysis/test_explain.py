"""Grad-CAM (``kzoo explain``): a heatmap for every registered image model, that follows the
object a trained model keys on, and PNGs written by the command."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import assert_clean_error, run_cli
from PIL import Image

import kzoo
from kzoo.analysis.explain import explain, feature_map, grad_cam
from kzoo.errors import KzooError
from kzoo.models.registry import get_spec, list_models
from kzoo.models.saving import save_model

SMALL_INPUT = {"alexnet": (64, 64, 3), "efficientnet_b0": (64, 64, 3), "mobilenet_v2": (64, 64, 3),
               "mobilenet_v3_small": (64, 64, 3), "resnet50": (64, 64, 3)}
IMAGE_MODELS = [name for name in list_models() if len(get_spec(name).input_shape or ()) == 3]


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_every_registered_image_model_gets_a_heatmap_or_a_clear_refusal(name):
    spec = get_spec(name)
    options = {"num_classes": 3}
    if name in SMALL_INPUT:
        options["input_shape"] = SMALL_INPUT[name]
    if "weights" in spec.options:
        options["weights"] = None
    model = kzoo.build(name, **options)
    shape = model.input_shape[1:]
    images = np.random.default_rng(0).integers(0, 255, (2, *shape)).astype("float32")
    if not {"convnet", "pretrained"} & set(spec.tags):
        with pytest.raises(KzooError, match="no convolutional feature map"):
            grad_cam(model, images)
        return
    heatmaps, probabilities = grad_cam(model, images)
    assert heatmaps.shape == (2, *shape[:2])
    assert np.isfinite(heatmaps).all() and heatmaps.min() >= 0 and heatmaps.max() <= 1
    assert probabilities.shape == (2, 3)
    assert len(feature_map(model).shape) == 4


def patch_images(count: int, rng, with_patch: np.ndarray) -> np.ndarray:
    """28x28 grey noise; where ``with_patch``, a bright 7x7 square at a random place."""
    images = rng.integers(0, 80, (count, 28, 28, 1)).astype("uint8")
    for image, present in zip(images, with_patch):
        if present:
            row, column = rng.integers(0, 22, 2)
            image[row:row + 7, column:column + 7] = 250
    return images


@pytest.fixture(scope="module")
def patch_model():
    """LeNet-5 trained to tell images with a bright square (class 1) from noise (class 0)."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 1200)
    images = patch_images(1200, rng, labels == 1).astype("float32")
    model = kzoo.build("lenet5", num_classes=2)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    history = model.fit(images, labels, batch_size=64, epochs=4, verbose=0)
    assert history.history["accuracy"][-1] > 0.95  # it learned the square
    return model


@pytest.mark.parametrize("corner", [(0, 0), (0, 21), (21, 0), (21, 21)])
def test_the_heatmap_peak_follows_the_object(patch_model, corner):
    image = np.full((1, 28, 28, 1), 40.0, "float32")
    row, column = corner
    image[0, row:row + 7, column:column + 7] = 250
    heatmaps, probabilities = grad_cam(patch_model, image, classes=[1])
    assert probabilities[0, 1] > 0.5
    heatmap = heatmaps[0]
    assert heatmap.std() > 0.05  # not uniform
    peak = np.unravel_index(np.argmax(heatmap), heatmap.shape)
    # the peak lies in the square's quadrant, near the square
    assert (peak[0] < 14) == (row < 14) and (peak[1] < 14) == (column < 14), (corner, peak)
    inside = heatmap[row:row + 7, column:column + 7].mean()
    assert inside > 2 * heatmap.mean(), (corner, inside, heatmap.mean())


@pytest.mark.slow
def test_explain_writes_a_png_per_image_from_python_and_the_cli(patch_model, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    save_model(patch_model, run / "model.keras", ["noise", "square"])
    images = tmp_path / "images"
    images.mkdir()
    for number, corner in enumerate([(0, 0), (21, 21)]):
        pixels = np.full((28, 28), 40, "uint8")
        pixels[corner[0]:corner[0] + 7, corner[1]:corner[1] + 7] = 250
        Image.fromarray(pixels).save(images / f"square{number}.png")
    (images / "broken.png").write_bytes(b"not an image")

    results = explain(run, [images], class_name="square")
    written = {image.rsplit("/", 1)[-1]: png for image, png, _ in results}
    assert written["broken.png"] is None
    for name in ("square0.png", "square1.png"):
        assert written[name] == run / "explain" / f"{name[:-4]}.gradcam.png"
        picture = np.asarray(Image.open(written[name]))
        assert picture.shape[0] > 100 and picture.std() > 10  # a real picture, not blank

    printed = run_cli("explain", str(run), str(images / "square1.png"), "--output", "out",
                      cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    assert (tmp_path / "out" / "square1.gradcam.png").is_file()
    assert "square1.gradcam.png" in printed.stdout
    refused = run_cli("explain", str(run), str(images), "--class", "cat", cwd=tmp_path)
    assert_clean_error(refused, "--class 'cat'", "noise, square")
