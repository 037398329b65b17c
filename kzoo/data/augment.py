"""Named augmentation presets: ``keras.layers.Pipeline`` stacks of Keras preprocessing layers.

They run in the ``tf.data`` pipeline on raw 0-255 pixels during training only, and are never
saved inside a trained model. A ``Pipeline`` (not a ``keras.Sequential``) keeps its layers on
TensorFlow ops inside ``dataset.map`` whatever the Keras backend, so the same presets work on
JAX; on TensorFlow both give identical images.

The ``imagenet`` preset flips, rotates and zooms with :class:`RandomAffine`, one bilinear warp per
image for what ``RandomFlip("horizontal")``, ``RandomRotation`` and ``RandomZoom`` do in three
passes: the same random ranges, a third of the work (the flip is a sign in the warp's matrix, and
exact: a flip alone lands on the pixel grid, no half-pixel shift) and one interpolation blur
instead of two. Its layers get distinct seeds derived from ``seed``: Keras layers built with the
same integer seed draw the same numbers, which would tie the flip, the angle and the zoom of every
image to its contrast.
"""

from __future__ import annotations

import difflib
import math

import keras
import numpy as np
from keras import layers

from kzoo.errors import KzooError


# RandomAffine subclasses the public keras.layers.RandomRotation for its plumbing (the private
# hooks it uses are listed in kzoo/_compat.py, and tested there), checked on
# Keras 3.15.1: the backend switch that keeps the layer on TensorFlow ops inside tf.data whatever
# the Keras backend (``self.backend``), the per-backend seed generator
# (``self._get_seed_generator``), the factor, fill-mode and interpolation checks, and the
# ``get_random_transformation`` / ``_transform_images`` hooks that every Keras image layer's
# ``call`` goes through. Only those hooks are overridden.
@keras.saving.register_keras_serializable(package="kzoo")
class RandomAffine(layers.RandomRotation):
    """Random horizontal flip, rotation and zoom about the image centre, applied as one affine
    warp per image.

    The same as ``RandomFlip("horizontal")`` (with ``horizontal_flip=True``) followed by
    ``RandomRotation(rotation_factor)`` and ``RandomZoom(zoom_factor)`` with the same drawn flip,
    angle and zoom, up to interpolation: each image gets its own angle, uniform in
    ``rotation_factor`` (a fraction of 2 pi, positive counter-clockwise, a number ``f`` meaning
    ``(-f, f)``), its own zoom factor, uniform in ``1 + zoom_factor`` (a number ``f`` meaning
    ``(-f, f)``; positive zooms out, negative zooms in), the same for height and width as
    ``RandomZoom`` with ``width_factor=None``, and, with ``horizontal_flip``, a left-right
    mirror with probability 1/2; the three are drawn independently. The flip costs nothing: it
    is a sign in the matrix, and exact (a flip alone maps pixel centres onto pixel centres, so
    it gives ``np.flip`` of the image). ``fill_mode``, ``interpolation``, ``fill_value`` and
    ``data_format`` are those of ``RandomRotation``. The identity when not training. Bounding
    boxes are not supported.
    """

    def __init__(
        self,
        rotation_factor,
        zoom_factor,
        horizontal_flip: bool = False,
        fill_mode="reflect",
        interpolation="bilinear",
        seed=None,
        fill_value=0.0,
        data_format=None,
        **kwargs,
    ):
        super().__init__(
            rotation_factor,
            fill_mode=fill_mode,
            interpolation=interpolation,
            seed=seed,
            fill_value=fill_value,
            data_format=data_format,
            **kwargs,
        )
        self.rotation_factor = rotation_factor
        self.zoom_factor = zoom_factor
        self.zoom_range = _zoom_range(zoom_factor)
        if not isinstance(horizontal_flip, (bool, np.bool_)):
            raise TypeError(
                f"horizontal_flip must be True or False; received horizontal_flip={horizontal_flip!r}"
            )
        self.horizontal_flip = bool(horizontal_flip)

    def get_random_transformation(self, data, training=True, seed=None):
        if not training:
            return None
        ops = self.backend
        images = data["images"] if isinstance(data, dict) else data
        shape = ops.core.shape(images)
        batch_size = shape[0] if len(shape) == 4 else 1
        if self.data_format == "channels_last":
            height, width = shape[-3], shape[-2]
        else:
            height, width = shape[-2], shape[-1]
        if seed is None:
            seed = self._get_seed_generator(ops._backend)
        # Successive draws from one generator (each moves it on): independent angles, zooms and
        # flips. Without horizontal_flip there is no third draw, so the angles and zooms a seed
        # gives are those it gave before the flip existed.
        angle = ops.random.uniform(
            (batch_size,), 2 * math.pi * self.factor[0], 2 * math.pi * self.factor[1], seed=seed
        )
        zoom = ops.random.uniform(
            (batch_size,), 1.0 + self.zoom_range[0], 1.0 + self.zoom_range[1], seed=seed
        )
        if self.horizontal_flip:
            flip = ops.numpy.less(ops.random.uniform((batch_size,), seed=seed), 0.5)
        else:
            flip = ops.numpy.zeros((batch_size,), dtype="bool")
        return {
            "angle": angle,
            "zoom": zoom,
            "flip": flip,
            "matrix": rotation_zoom_matrix(angle, zoom, height, width, flip=flip, ops=ops),
        }

    def _transform_images(self, images, transformation, interpolation):
        if transformation is None:
            return images
        return self.backend.image.affine_transform(
            images,
            transformation["matrix"],
            interpolation=interpolation,
            fill_mode=self.fill_mode,
            fill_value=self.fill_value,
            data_format=self.data_format,
        )

    def transform_bounding_boxes(self, bounding_boxes, transformation, training=True):
        raise NotImplementedError(f"{type(self).__name__} does not transform bounding boxes")

    def get_config(self):
        config = super().get_config()
        config.pop("factor", None)
        config.update(
            rotation_factor=self.rotation_factor,
            zoom_factor=self.zoom_factor,
            horizontal_flip=self.horizontal_flip,
        )
        return config


def rotation_zoom_matrix(angle, zoom, height, width, flip=None, ops=keras.ops):
    """``(batch, 8)`` projective transforms (the ``affine_transform`` layout, mapping output
    pixels to input pixels) that mirror left-right where ``flip`` is true (``None``: nowhere),
    then rotate by ``angle`` radians counter-clockwise and zoom by ``zoom`` (> 1 zooms out), all
    about the image centre: ``F @ R @ Z``, with ``R`` and ``Z`` Keras's RandomRotation and
    RandomZoom matrices.

    ``affine_transform`` (on TensorFlow and JAX alike) puts pixel ``j`` of a row at ``x = j``,
    so the centre is ``(width - 1) / 2`` and the flip ``F`` maps ``x`` to ``width - 1 - x``,
    pixel centre to pixel centre: a flip alone reads every output pixel from exactly one input
    pixel, ``np.flip``'s, with no interpolation and no half-pixel shift."""
    dtype = "float32"
    angle, zoom = ops.cast(angle, dtype), ops.cast(zoom, dtype)
    cx = (ops.cast(width, dtype) - 1.0) / 2.0
    cy = (ops.cast(height, dtype) - 1.0) / 2.0
    cos = zoom * ops.numpy.cos(angle)
    sin = zoom * ops.numpy.sin(angle)
    zeros = ops.numpy.zeros_like(angle)
    # R @ Z = [[cos, -sin, cx - cos cx + sin cy], [sin, cos, cy - sin cx - cos cy], [0, 0, 1]]
    first_row = [cos, -sin, cx - cos * cx + sin * cy]
    if flip is not None:
        # F = [[s, 0, (1 - s) cx], [0, 1, 0], [0, 0, 1]], s = -1 to flip, 1 not to: F @ R @ Z
        # negates the first row and adds 2 cx = width - 1 to its offset (exact in float32).
        sign = 1.0 - 2.0 * ops.cast(flip, dtype)
        first_row = [sign * first_row[0], sign * first_row[1],
                     sign * first_row[2] + (1.0 - sign) * cx]
    return ops.numpy.stack(
        [*first_row, sin, cos, cy - sin * cx - cos * cy, zeros, zeros],
        axis=1,
    )


class AlternatingFlip:
    """airbench's derandomised horizontal flip: in epoch 0 a seeded half of the images is
    flipped, and every image is flipped in every other epoch after that, so each image is seen
    both ways in any two consecutive epochs. It needs to know which image is which and the
    epoch: :func:`kzoo.data.pipeline.epoch_batches` passes both (``example_ids``, ``epoch``)."""

    uses_example_ids = True

    def __init__(self, seed: int | None = None):
        self.seed = 0 if seed is None else int(seed) % 2**31

    def __call__(self, images, example_ids, epoch):
        import tensorflow as tf

        first = tf.random.experimental.index_shuffle(
            tf.cast(example_ids, tf.int64), tf.constant([self.seed, 0x5EED], tf.int64),
            tf.constant(2**31 - 1, tf.int64)) % 2
        flipped = tf.not_equal(first, tf.cast(epoch, tf.int64) % 2)
        return tf.where(flipped[:, None, None, None], tf.reverse(images, axis=[2]), images)


def _zoom_range(factor):
    """``RandomZoom``'s reading of a zoom factor: a number ``f`` is ``(-|f|, |f|)``; each bound
    in (-1, 1]."""
    bounds = sorted(factor) if isinstance(factor, (tuple, list)) else [-abs(factor), abs(factor)]
    if len(bounds) != 2 or not all(-1.0 < bound <= 1.0 for bound in bounds):
        raise ValueError(
            "zoom_factor must be a number or a pair of numbers in (-1, 1]; "
            f"received zoom_factor={factor!r}"
        )
    return tuple(float(bound) for bound in bounds)


def _layer_seeds(seed, count):
    """``count`` distinct seeds derived from ``seed`` (all ``None`` for ``None``)."""
    if seed is None:
        return [None] * count
    return [int(state) >> 1 for state in np.random.SeedSequence(seed % 2**64).generate_state(count)]


def _digits(seed):
    return [
        layers.RandomRotation(0.03, fill_mode="constant", seed=seed),
        layers.RandomTranslation(0.08, 0.08, fill_mode="constant", seed=seed),
        layers.RandomZoom(0.08, fill_mode="constant", seed=seed),
    ]


def _cifar(seed):
    return [
        layers.RandomFlip("horizontal", seed=seed),
        layers.RandomTranslation(0.125, 0.125, fill_mode="reflect", seed=seed),
    ]


def _imagenet(seed):
    affine, contrast = _layer_seeds(seed, 2)
    return [
        RandomAffine(rotation_factor=0.05, zoom_factor=0.15, horizontal_flip=True, seed=affine),
        layers.RandomContrast(0.2, seed=contrast),
    ]


def _airbench(seed):
    flip, shift = _layer_seeds(seed, 2)
    return [
        AlternatingFlip(seed=flip),
        layers.RandomTranslation(2 / 32, 2 / 32, fill_mode="reflect", interpolation="nearest",
                                 seed=shift),
    ]


PRESETS = {
    "none": lambda seed: [],
    "digits": _digits,  # small rotation, shift and zoom; no flips (a flipped 2 is no digit)
    "cifar": _cifar,  # horizontal flip and a shift of up to 4 pixels (the classic pad-and-crop)
    "imagenet": _imagenet,  # flip, rotation and zoom in one warp, contrast
    "airbench": _airbench,  # alternating flip, a shift of up to 2 pixels (of 32): airbench94's
}


def augmentation(name: str, seed: int | None = None) -> keras.layers.Pipeline | list | None:
    """The preset ``name`` as a ``keras.layers.Pipeline``, or ``None`` for ``"none"``; a preset
    with a layer that needs each image's identity and the epoch (:class:`AlternatingFlip`) is a
    plain list of layers, which only :func:`kzoo.data.pipeline.epoch_batches` applies.

    >>> augment = augmentation("cifar", seed=0)
    >>> dataset = dataset.map(lambda x, y: (augment(x, training=True), y))
    """
    if name not in PRESETS:
        close = difflib.get_close_matches(name, PRESETS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise KzooError(
            f"unknown augmentation preset {name!r}; {hint}expected one of {', '.join(PRESETS)}"
        )
    stack = PRESETS[name](seed)
    if any(getattr(layer, "uses_example_ids", False) for layer in stack):
        return stack  # applied layer by layer by kzoo.data.pipeline.epoch_batches
    return keras.layers.Pipeline(stack, name=f"augment_{name}") if stack else None
