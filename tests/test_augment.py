"""Augmentation presets: each builds, ``none`` is None, unknown names get a suggestion, and
``digits`` changes an image in training mode only."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import kzoo
from kzoo.augment import PRESETS


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_each_preset_builds_and_keeps_the_shape(name):
    augment = kzoo.augmentation(name, seed=0)
    if name == "none":
        assert augment is None
        return
    assert isinstance(augment, keras.layers.Pipeline)
    assert augment.layers and all(type(layer).__name__.startswith("Random") for layer in augment.layers)
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype("float32")
    out = np.asarray(augment(images, training=True))
    assert out.shape == images.shape
    assert np.all(np.isfinite(out))


def test_unknown_preset_suggests_a_close_name():
    with pytest.raises(kzoo.KzooError) as error:
        kzoo.augmentation("digit")
    message = str(error.value)
    assert "'digits'" in message
    for name in PRESETS:
        assert name in message


def test_digits_changes_an_image_when_training_only():
    image = np.zeros((1, 28, 28, 1), dtype="float32")
    image[0, 6:22, 12:16, 0] = 255.0  # a "1"
    augment = kzoo.augmentation("digits", seed=0)
    outputs = [np.asarray(augment(image, training=True)) for _ in range(4)]
    assert all(out.shape == image.shape for out in outputs)
    assert any(not np.allclose(out, image) for out in outputs)
    np.testing.assert_array_equal(np.asarray(augment(image, training=False)), image)
    # no flips for digits: the ink stays roughly where it was, not mirrored to another place
    for out in outputs:
        assert out[0, 6:22, 10:18].sum() > 0.5 * image.sum()
