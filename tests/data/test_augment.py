"""Augmentation presets: each builds, ``none`` is None, unknown names get a suggestion, and
``digits`` changes an image in training mode only.

``RandomAffine`` (the ``imagenet`` preset's flip, rotation and zoom in one warp): its matrix is a
flip about the centre times Keras's RandomRotation matrix times its RandomZoom matrix, its image
is Keras's flip-then-two-warps image up to interpolation, a flip alone is ``np.flip`` exactly (no
half-pixel shift), each image is flipped with probability 1/2 independently of its angle and
zoom, it is the identity with zero factors or when not training, it is reproducible with a seed,
every image of a batch gets its own transform, and it runs in ``tf.data`` on the TensorFlow and
(in a subprocess) the JAX backend.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import cli_env

import kzoo
from kzoo.data.augment import PRESETS, RandomAffine, rotation_zoom_matrix


@pytest.mark.parametrize("name", sorted(set(PRESETS) - {"airbench"}))  # airbench: test_airbench.py
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


# --- RandomAffine -------------------------------------------------------------------------------


def smooth_images(count: int, height: int, width: int) -> np.ndarray:
    """0-255 float32 images of slow waves and a ramp, different per image and per channel,
    with no symmetry a rotation or a flip could hide behind."""
    y, x = np.mgrid[0:height, 0:width].astype("float32")
    images = np.empty((count, height, width, 3), "float32")
    for i in range(count):
        for c in range(3):
            images[i, ..., c] = (
                127.5
                + 50 * np.sin(2 * np.pi * x / (19 + 3 * i + c) + 0.7 * c)
                + 40 * np.cos(2 * np.pi * y / (23 + 2 * c) + 0.3 * i)
                + 0.5 * (x - y)
            )
    return images


def keras_zoom_matrix(zoom: float, height: int, width: int) -> np.ndarray:
    """Keras RandomZoom's matrix (keras/src/.../random_zoom.py, ``_get_zoom_matrix``), 3x3."""
    return np.array([[zoom, 0, (width - 1) / 2 * (1 - zoom)],
                     [0, zoom, (height - 1) / 2 * (1 - zoom)],
                     [0, 0, 1]])


def flip_matrix(flip: bool, width: int) -> np.ndarray:
    """Mirror left-right about the centre on the pixel grid ``affine_transform`` samples
    (pixel ``j`` at ``x = j``): ``x -> width - 1 - x``."""
    return np.array([[-1, 0, width - 1], [0, 1, 0], [0, 0, 1]]) if flip else np.eye(3)


def as_3x3(transform) -> np.ndarray:
    return np.append(np.asarray(transform, "float64"), 1.0).reshape(3, 3)


@pytest.mark.parametrize("horizontal_flip", [False, True])
def test_drawn_matrix_is_flip_times_keras_rotation_matrix_times_keras_zoom_matrix(horizontal_flip):
    height, width = 24, 30
    images = np.zeros((8, height, width, 3), "float32")
    layer = RandomAffine(0.05, 0.15, horizontal_flip=horizontal_flip, seed=0)
    drawn = layer.get_random_transformation(images)
    angles, zooms = np.asarray(drawn["angle"]), np.asarray(drawn["zoom"])
    flips = np.asarray(drawn["flip"])
    assert flips.dtype == bool and flips.shape == (8,)
    assert (0 < flips.sum() < 8) if horizontal_flip else not flips.any()
    assert np.all(np.abs(angles) <= 0.05 * 2 * math.pi) and np.ptp(angles) > 0.01
    assert np.all(np.abs(zooms - 1) <= 0.15) and np.ptp(zooms) > 0.01
    for angle, zoom, flip, matrix in zip(angles, zooms, flips, np.asarray(drawn["matrix"])):
        # RandomRotation with a one-point range rotates by exactly that fraction of 2 pi.
        fraction = float(angle) / (2 * math.pi)
        rotation = keras.layers.RandomRotation((fraction, fraction))
        rotation_matrix = rotation.get_random_transformation(images[:1])["rotation_matrix"]
        expected = (flip_matrix(flip, width) @ as_3x3(rotation_matrix)
                    @ keras_zoom_matrix(float(zoom), height, width))
        np.testing.assert_allclose(as_3x3(matrix), expected, atol=1e-4)


def test_the_flip_is_a_third_draw_and_leaves_angles_and_zooms_as_they_were():
    images = np.zeros((16, 8, 8, 1), "float32")
    plain = RandomAffine(0.05, 0.15, seed=4).get_random_transformation(images)
    flipping = RandomAffine(0.05, 0.15, horizontal_flip=True, seed=4).get_random_transformation(images)
    for key in ("angle", "zoom"):
        np.testing.assert_array_equal(np.asarray(plain[key]), np.asarray(flipping[key]))
    assert np.asarray(flipping["flip"]).any() and not np.asarray(plain["flip"]).any()


@pytest.mark.parametrize("angle, zoom, flip", [(0.3, 0.86, False), (-0.2, 1.14, False),
                                               (0.05, 1.0, False), (0.0, 0.9, False),
                                               (0.3, 0.86, True), (-0.2, 1.0, True)])
def test_one_warp_matches_keras_flip_then_rotation_then_zoom(angle, zoom, flip):
    """The fused warp against (a flip, then) RandomRotation then RandomZoom with the same angle
    and zoom (one-point ranges), on the centre of the image, where neither warp reads past the
    edge: the two agree up to the second bilinear interpolation, and a rotation the other way
    does not (nor, with a flip, the same warp without it)."""
    size = 64
    images = smooth_images(2, size, size)
    layer = RandomAffine(0.05, 0.15, horizontal_flip=True)
    matrix = rotation_zoom_matrix([angle, angle], [zoom, zoom], size, size, flip=[flip, flip])
    fused = np.asarray(layer.transform_images(images, {"matrix": matrix}))

    def keras_two_warps(angle, flip=flip):
        fraction = angle / (2 * math.pi)
        source = np.flip(images, axis=2) if flip else images
        rotated = keras.layers.RandomRotation((fraction, fraction))(source, training=True)
        zoomed = keras.layers.RandomZoom((zoom - 1, zoom - 1))(rotated, training=True)
        return np.asarray(zoomed)

    centre = (slice(None), slice(16, 48), slice(16, 48))
    difference = np.abs(fused - keras_two_warps(angle))[centre]
    error = difference.max()
    print(f"two warps vs one: max {error:.3f} mean {difference.mean():.3f}")
    assert error < 3.0 and difference.mean() < 0.5  # of 0-255: the second interpolation's blur
    if angle:
        assert np.abs(fused - keras_two_warps(-angle))[centre].max() > 10 * error + 10
    if flip:
        assert np.abs(fused - keras_two_warps(angle, flip=False))[centre].max() > 10 * error + 10
    if angle or zoom != 1:
        assert np.abs(fused - images)[centre].max() > 5 * error + 5


def test_a_flip_alone_is_np_flip_exactly():
    """Rotation 0, zoom 1, flip forced: the matrix is ``x -> width - 1 - x``, pixel centre to
    pixel centre, so every output pixel is one input pixel (no half-pixel shift, no blur), for
    odd and even widths, each interpolation and fill mode."""
    for height, width in [(9, 11), (8, 16), (5, 1)]:
        images = np.random.default_rng(width).integers(0, 256, (3, height, width, 3))
        images = images.astype("float32")
        matrix = rotation_zoom_matrix([0.0] * 3, [1.0] * 3, height, width, flip=[True] * 3)
        np.testing.assert_array_equal(
            as_3x3(np.asarray(matrix)[0]), flip_matrix(True, width).astype("float32"))
        for interpolation in ("bilinear", "nearest"):
            for fill_mode in ("reflect", "constant"):
                layer = RandomAffine(0.0, 0.0, horizontal_flip=True, fill_mode=fill_mode,
                                     interpolation=interpolation)
                out = np.asarray(layer.transform_images(images, {"matrix": matrix}))
                np.testing.assert_allclose(out, np.flip(images, axis=2), rtol=0, atol=1e-4)


def test_zero_factors_with_flips_give_each_image_or_its_mirror_exactly():
    """Through the layer's call, eagerly and in ``tf.data``: zero rotation and zoom ranges with
    ``horizontal_flip``: every image comes back either unchanged or ``np.flip``-ped, exactly,
    and the drawn flips are the mirrored images."""
    images = np.random.default_rng(5).integers(0, 256, (64, 12, 15, 3)).astype("float32")
    drawn = np.asarray(RandomAffine(0.0, 0.0, horizontal_flip=True, seed=2)
                       .get_random_transformation(images)["flip"])
    eager = np.asarray(RandomAffine(0.0, 0.0, horizontal_flip=True, seed=2)(images, training=True))
    layer = RandomAffine(0.0, 0.0, horizontal_flip=True, seed=2)
    streamed = next(iter(tf.data.Dataset.from_tensors(images).map(
        lambda batch: layer(batch, training=True)))).numpy()
    for out in (eager, streamed):
        unchanged = np.abs(out - images).max(axis=(1, 2, 3)) < 1e-4
        mirrored = np.abs(out - np.flip(images, axis=2)).max(axis=(1, 2, 3)) < 1e-4
        assert np.all(unchanged ^ mirrored)
        np.testing.assert_array_equal(mirrored, drawn)
        assert 20 <= mirrored.sum() <= 44


def test_flips_with_full_ranges_are_half_the_images_and_independent_of_angle_and_zoom():
    size = 24
    images = np.repeat(smooth_images(1, size, size), 64, axis=0)
    drawn = RandomAffine(0.05, 0.15, horizontal_flip=True, seed=9).get_random_transformation(images)
    out = np.asarray(RandomAffine(0.05, 0.15, horizontal_flip=True, seed=9)(images, training=True))
    angles, zooms, flips = (np.asarray(drawn[key]) for key in ("angle", "zoom", "flip"))
    # each image is its drawn angle and zoom, mirrored where the drawn flip says, not elsewhere
    layer = RandomAffine(0.05, 0.15)
    for want in (False, True):
        matrix = rotation_zoom_matrix(angles, zooms, size, size, flip=np.full(64, want))
        warped = np.asarray(layer.transform_images(images, {"matrix": matrix}))
        close = np.abs(out - warped).max(axis=(1, 2, 3)) < 1e-3
        np.testing.assert_array_equal(close, flips == want)
    assert 20 <= flips.sum() <= 44  # Binomial(64, 1/2): 99.8 % of draws
    # over many images: probability 1/2, uncorrelated with angle and zoom
    many = RandomAffine(0.05, 0.15, horizontal_flip=True, seed=0).get_random_transformation(
        np.zeros((4000, 4, 4, 1)))
    angles, zooms, flips = (np.asarray(many[key]) for key in ("angle", "zoom", "flip"))
    assert abs(flips.mean() - 0.5) < 0.03
    assert abs(np.corrcoef(angles, flips)[0, 1]) < 0.06
    assert abs(np.corrcoef(zooms, flips)[0, 1]) < 0.06
    limit = 0.05 * 2 * math.pi
    for subset in (flips, ~flips):  # both halves see the full range of angles
        assert subset.sum() > 1800
        assert angles[subset].min() < -0.95 * limit and angles[subset].max() > 0.95 * limit
        assert abs(np.mean(angles[subset])) < 0.06 * limit


def test_zero_factors_give_the_input_back_and_so_does_inference():
    images = np.random.default_rng(1).integers(0, 256, (3, 20, 28, 3)).astype("float32")
    out = np.asarray(RandomAffine(0.0, 0.0, seed=0)(images, training=True))
    np.testing.assert_allclose(out, images, atol=1e-3)
    for horizontal_flip in (False, True):
        layer = RandomAffine(0.05, 0.15, horizontal_flip=horizontal_flip, seed=0)
        np.testing.assert_array_equal(np.asarray(layer(images, training=False)), images)
        assert not np.allclose(np.asarray(layer(images, training=True)), images, atol=1.0)


def test_shapes_and_dtypes_are_those_of_keras_rotation():
    batch = np.random.default_rng(2).integers(0, 256, (2, 16, 18, 3)).astype("uint8")
    for images in (batch, batch[0], batch.astype("float32")):
        ours = RandomAffine(0.05, 0.15, seed=0)(images, training=True)
        theirs = keras.layers.RandomRotation(0.05, seed=0)(images, training=True)
        assert tuple(ours.shape) == tuple(theirs.shape) == images.shape
        assert keras.backend.standardize_dtype(ours.dtype) == \
            keras.backend.standardize_dtype(theirs.dtype) == "float32"
    assert RandomAffine(0.05, 0.15).compute_output_shape((None, 16, 18, 3)) == (None, 16, 18, 3)


def test_same_seed_same_images_other_seed_other_images():
    images = smooth_images(4, 32, 32)

    def two_calls(seed):
        layer = RandomAffine(0.05, 0.15, seed=seed)
        return [np.asarray(layer(images, training=True)) for _ in range(2)]

    first, again, other = two_calls(5), two_calls(5), two_calls(6)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.allclose(first[0], first[1], atol=1.0)  # the generator moves on
    assert not np.allclose(first[0], other[0], atol=1.0)


def test_each_image_of_a_batch_gets_its_own_independent_transform():
    images = np.repeat(smooth_images(1, 32, 32), 6, axis=0)
    out = np.asarray(RandomAffine(0.05, 0.15, seed=0)(images, training=True))
    for i in range(len(out)):
        for j in range(i):
            assert np.abs(out[i] - out[j]).max() > 1.0, (i, j)
    # over many images: the full ranges, uniform, and angle and zoom uncorrelated
    drawn = RandomAffine(0.05, 0.15, seed=0).get_random_transformation(np.zeros((4000, 4, 4, 1)))
    angles, zooms = np.asarray(drawn["angle"]), np.asarray(drawn["zoom"])
    limit = 0.05 * 2 * math.pi
    assert -limit <= angles.min() < -0.95 * limit and 0.95 * limit < angles.max() <= limit
    assert 0.85 <= zooms.min() < 0.86 and 1.14 < zooms.max() <= 1.15
    assert abs(np.mean(angles)) < 0.05 * limit and abs(np.mean(zooms) - 1) < 0.01
    assert abs(np.corrcoef(angles, zooms)[0, 1]) < 0.1


def test_imagenet_preset_gives_its_layers_distinct_reproducible_seeds():
    """Keras layers built with the same integer seed draw the same numbers (the angle would
    decide the contrast), so the preset derives one seed per layer."""
    seeds = [layer.seed for layer in kzoo.augmentation("imagenet", seed=0).layers]
    assert len(set(seeds)) == 2
    assert seeds == [layer.seed for layer in kzoo.augmentation("imagenet", seed=0).layers]
    assert seeds != [layer.seed for layer in kzoo.augmentation("imagenet", seed=1).layers]
    assert [layer.seed for layer in kzoo.augmentation("imagenet").layers] == [None] * 2
    preset = kzoo.augmentation("imagenet").layers
    assert [type(layer).__name__ for layer in preset] == ["RandomAffine", "RandomContrast"]
    assert preset[0].horizontal_flip  # the flip is in the warp, not a layer of its own


def test_config_round_trips_alone_and_inside_the_preset():
    assert RandomAffine(0.05, 0.15).get_config()["horizontal_flip"] is False
    layer = RandomAffine((-0.02, 0.04), 0.1, horizontal_flip=True, fill_mode="constant",
                         fill_value=7.0, seed=3, interpolation="nearest", name="warp")
    config = layer.get_config()
    assert config["rotation_factor"] == (-0.02, 0.04) and config["zoom_factor"] == 0.1
    assert config["horizontal_flip"] is True
    assert "factor" not in config
    assert RandomAffine.from_config(config).get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is RandomAffine and restored.get_config() == config
    preset = kzoo.augmentation("imagenet", seed=0)
    rebuilt = keras.layers.Pipeline.from_config(preset.get_config())
    assert [lay.get_config() for lay in rebuilt.layers] == [lay.get_config() for lay in preset.layers]


@pytest.mark.parametrize("kwargs", [{"zoom_factor": 1.5}, {"zoom_factor": (0.1, 0.2, 0.3)},
                                    {"rotation_factor": 2.0}, {"fill_mode": "mirror"},
                                    {"horizontal_flip": "horizontal"}])
def test_bad_arguments_are_refused(kwargs):
    with pytest.raises((ValueError, TypeError, NotImplementedError)):
        RandomAffine(**{"rotation_factor": 0.05, "zoom_factor": 0.15, **kwargs})


def test_preset_runs_in_a_tf_data_map_like_it_runs_eagerly():
    images = np.random.default_rng(3).integers(0, 256, (12, 40, 48, 3)).astype("uint8")

    def stream(augment):
        dataset = tf.data.Dataset.from_tensor_slices(images).batch(4)
        dataset = dataset.map(lambda batch: augment(tf.cast(batch, "float32"), training=True))
        return [batch.numpy() for batch in dataset]

    first = stream(kzoo.augmentation("imagenet", seed=0))
    assert [batch.shape for batch in first] == [(4, 40, 48, 3)] * 3
    assert all(batch.dtype == np.float32 and np.isfinite(batch).all() for batch in first)
    assert not np.allclose(np.concatenate(first), images, atol=1.0)
    again = stream(kzoo.augmentation("imagenet", seed=0))
    for one, two in zip(first, again):
        np.testing.assert_array_equal(one, two)
    if keras.backend.backend() == "tensorflow":  # one generator for both: the same draws
        eager = kzoo.augmentation("imagenet", seed=0)
        for batch, streamed in zip(np.split(images.astype("float32"), 3), first):
            np.testing.assert_allclose(np.asarray(eager(batch, training=True)), streamed, atol=1e-3)


JAX_SCRIPT = """
import json
import keras, numpy as np, tensorflow as tf
import kzoo
from kzoo.data.augment import RandomAffine
images = np.random.default_rng(0).integers(0, 256, (8, 36, 44, 3)).astype("uint8")

def stream(seed, parallel=None):
    # Parallel calls race for the seed generator's state, for Keras's layers too: only a
    # sequential map is reproducible.
    augment = kzoo.augmentation("imagenet", seed=seed)
    dataset = tf.data.Dataset.from_tensor_slices(images).batch(4)
    dataset = dataset.map(lambda b: augment(tf.cast(b, "float32"), training=True),
                          num_parallel_calls=parallel)
    return np.concatenate([batch.numpy() for batch in dataset])

streamed, again = stream(0), stream(0)
parallel = stream(0, tf.data.AUTOTUNE)
eager = RandomAffine(0.05, 0.15, seed=0)(images.astype("float32"), training=True)
identity = RandomAffine(0.0, 0.0, seed=0)(images.astype("float32"), training=True)
flipper = RandomAffine(0.0, 0.0, horizontal_flip=True, seed=0)
flipped = np.asarray(flipper(images.astype("float32"), training=True))
mirror = np.flip(images, axis=2).astype("float32")
as_is = np.abs(flipped - images).max(axis=(1, 2, 3))
as_mirror = np.abs(flipped - mirror).max(axis=(1, 2, 3))
print(json.dumps({
    "backend": keras.backend.backend(),
    "eager_type": type(eager).__module__,
    "shape": list(streamed.shape),
    "finite": bool(np.isfinite(streamed).all()),
    "changed": float(np.abs(streamed - images).mean()),
    "reproducible": bool(np.array_equal(streamed, again)),
    "parallel_shape": list(parallel.shape),
    "parallel_changed": float(np.abs(parallel - images).mean()),
    "eager_changed": float(np.abs(np.asarray(eager) - images).mean()),
    "identity_error": float(np.abs(np.asarray(identity) - images).max()),
    "flip_only_error": float(np.minimum(as_is, as_mirror).max()),
    "flip_only_mirrored": int((as_mirror < as_is).sum()),
    "inference_error": float(np.abs(np.asarray(RandomAffine(0.05, 0.15)(images, training=False)) - images).max()),
}))
"""


@pytest.mark.slow
def test_preset_runs_on_the_jax_backend_in_tf_data_and_eagerly():
    pytest.importorskip("jax", reason="the JAX backend needs jax: pip install 'kzoo[jax]'")
    result = subprocess.run([sys.executable, "-c", JAX_SCRIPT], env=cli_env(KERAS_BACKEND="jax"),
                            capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["backend"] == "jax"
    assert report["eager_type"].startswith("jax")  # eagerly, the layer computes on JAX arrays
    assert report["shape"] == [8, 36, 44, 3] and report["finite"]
    assert report["changed"] > 1.0 and report["eager_changed"] > 1.0
    assert report["reproducible"]
    assert report["parallel_shape"] == [8, 36, 44, 3] and report["parallel_changed"] > 1.0
    assert report["identity_error"] < 1e-3 and report["inference_error"] == 0.0
    assert report["flip_only_error"] < 1e-3 and 0 < report["flip_only_mirrored"] < 8
