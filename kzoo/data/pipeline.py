"""One ``tf.data`` input pipeline for every split of every dataset: held in memory when it is
small, streamed from disk when it is not.

A split is :class:`Examples`: rows of a source (an array in memory, or a
:class:`kzoo.data.rows.RowFile` on disk, such as a folder's image store or cached backbone
features) with their labels and files. :func:`make_pipeline` turns it into batches:

- **small** (its rows take at most :func:`in_memory_limit` bytes): read into memory once, a
  full shuffle of the examples each epoch, batches gathered from memory;
- **large**: blocks of consecutive rows are read from disk in a shuffled order (a shard-order
  shuffle), then mixed in a bounded shuffle buffer, so memory stays flat whatever the size;
- either way the pixels stay uint8 until a batch is formed: the float cast and the
  augmentation run on whole batches, in parallel, and batches are prefetched.

>>> train = make_pipeline(examples, batch_size=32, shuffle_seed=0, augment=augment)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import tensorflow as tf

from kzoo.errors import KzooError

BLOCK_BYTES = 8 << 20  # rows read from disk per read, about
SHUFFLE_BUFFER_BYTES = 128 << 20  # the bounded shuffle buffer of a streamed split


def in_memory_limit() -> int:
    """Bytes of rows a split may hold in memory: ``$KZOO_IN_MEMORY_LIMIT_MB``, default the
    smaller of 256 MiB and a 32nd of the machine's memory: room for CIFAR-10 or a few hundred
    photos, while a split of thousands of photos streams (held in memory, a split of 4,000
    224-pixel images would take 600 MB, next to a model's own 2 GB)."""
    given = os.environ.get("KZOO_IN_MEMORY_LIMIT_MB")
    if given:
        return int(float(given) * (1 << 20))
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        memory = 8 << 30
    return min(256 << 20, memory // 32)


class RowSource(Protocol):
    """Anything whose rows can be read by index: an array, or a file of rows."""

    dtype: Any

    def read(self, rows: Sequence[int] | np.ndarray) -> np.ndarray: ...


class ArrayRows:
    """An array in memory as a :class:`RowSource`."""

    def __init__(self, array: np.ndarray):
        self.array = np.asarray(array)
        self.dtype = self.array.dtype
        self.row_shape = self.array.shape[1:]

    def read(self, rows):
        return self.array[np.asarray(rows, dtype=np.int64)]


class JoinedRows:
    """Rows of several sources one after another, as a :class:`RowSource`: row ``i`` is the
    ``i``-th of the given rows of the first source, then of the second... Each read goes to the
    sources themselves, so files stay on disk."""

    def __init__(self, sources: Sequence[Any], rows: Sequence[np.ndarray]):
        self.sources = list(sources)
        self.rows = [np.asarray(r, dtype=np.int64) for r in rows]
        self.starts = np.cumsum([0] + [len(r) for r in self.rows])
        self.dtype = self.sources[0].dtype
        self.row_shape = tuple(self.sources[0].row_shape)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def read(self, rows):
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), *self.row_shape), dtype=self.dtype)
        part = np.searchsorted(self.starts, rows, side="right") - 1
        for number, source in enumerate(self.sources):
            mine = np.flatnonzero(part == number)
            if len(mine):
                out[mine] = source.read(self.rows[number][rows[mine] - self.starts[number]])
        return out


@dataclass
class Examples:
    """One split: ``rows`` of ``source`` (ascending, so reads are sequential), their
    ``labels``, and the files they came from (``paths``, empty for in-memory datasets)."""

    source: Any  # a RowSource: ArrayRows, or kzoo.data.rows.RowFile
    rows: np.ndarray
    labels: np.ndarray
    paths: list[str]
    _tensors: Any = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def from_arrays(cls, images: np.ndarray, labels: np.ndarray) -> Examples:
        return cls(ArrayRows(images), np.arange(len(images), dtype=np.int64), np.asarray(labels), [])

    @classmethod
    def from_rows(cls, source, rows: np.ndarray, labels: np.ndarray, paths: Sequence[str]) -> Examples:
        """Examples of ``source`` in ascending row order (``labels``, ``paths`` follow)."""
        order = np.argsort(rows, kind="stable")
        paths = list(paths)
        return cls(source, np.asarray(rows, dtype=np.int64)[order], np.asarray(labels)[order],
                   [paths[i] for i in order] if paths else [])

    @classmethod
    def from_scan(cls, part) -> Examples:
        """The images of a scanned split (:class:`kzoo.data.scan.SplitScan`), read from its store."""
        return cls.from_rows(part.store.rows, part.rows, part.labels, part.paths)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def row_shape(self) -> tuple[int, ...]:
        return tuple(self.source.row_shape)

    @property
    def nbytes(self) -> int:
        return len(self) * int(np.prod(self.row_shape, dtype=np.int64)) * np.dtype(self.source.dtype).itemsize

    @property
    def in_memory(self) -> bool:
        return isinstance(self.source, ArrayRows)

    def subset(self, index: Sequence[int] | np.ndarray) -> Examples:
        """The examples at positions ``index`` (kept in ascending row order)."""
        index = np.asarray(index, dtype=np.int64)
        return Examples.from_rows(self.source, self.rows[index], self.labels[index],
                                  [self.paths[i] for i in index] if self.paths else [])

    def concatenate(self, other: Examples) -> Examples:
        """These examples and ``other``'s: of one source, its rows; of two sources in memory,
        one array; otherwise a source that reads each source's rows where they lie (streamed
        as before, never loaded whole)."""
        labels, paths = np.r_[self.labels, other.labels], self.paths + other.paths
        if other.source is self.source:
            return Examples.from_rows(self.source, np.r_[self.rows, other.rows], labels, paths)
        if self.row_shape != other.row_shape or np.dtype(self.source.dtype) != np.dtype(other.source.dtype):
            raise KzooError(f"cannot join examples of shape {self.row_shape} "
                            f"({np.dtype(self.source.dtype)}) and {other.row_shape} "
                            f"({np.dtype(other.source.dtype)}); expected the same shape and type")
        if self.in_memory and other.in_memory:
            images = np.concatenate([self.read_all(), other.read_all()])
            return Examples(ArrayRows(images), np.arange(len(images), dtype=np.int64), labels, paths)
        source = JoinedRows((self.source, other.source), (self.rows, other.rows))
        return Examples(source, np.arange(len(source), dtype=np.int64), labels, paths)

    def image(self, position: int) -> np.ndarray:
        """The image (row) at ``position``."""
        return self.source.read([self.rows[position]])[0]

    def tensors(self) -> tuple[tf.Tensor, tf.Tensor]:
        """The rows and labels as tensors in memory, made once and shared by every pipeline
        over these examples (so validating every epoch holds one copy, not one per phase)."""
        if self._tensors is None:
            self._tensors = (tf.constant(self.read_all()), tf.constant(self.labels))
        return self._tensors

    def read_all(self) -> np.ndarray:
        if self.in_memory and np.array_equal(self.rows, np.arange(len(self.source.array))):
            return self.source.array  # no copy
        return self.source.read(self.rows)

    def dataset(self) -> tf.data.Dataset:
        """The examples, in order and unbatched, as a ``tf.data.Dataset`` of (row, label)."""
        if self.in_memory:
            return tf.data.Dataset.from_tensor_slices((self.read_all(), self.labels))
        return _blocks(self, shuffle_seed=None).unbatch()


def _block_reader(examples: Examples):
    """The number of blocks of consecutive rows, and a tf.data function reading block ``i``
    (about :data:`BLOCK_BYTES` of rows, with their labels) from the source."""
    row_bytes = max(1, examples.nbytes // max(len(examples), 1))
    block = max(1, BLOCK_BYTES // row_bytes)
    source, rows, labels = examples.source, examples.rows, examples.labels
    row_shape, dtype = examples.row_shape, tf.as_dtype(np.dtype(source.dtype))
    label_dtype = tf.as_dtype(labels.dtype)

    def read(index):
        start = int(index) * block
        return source.read(rows[start:start + block]), labels[start:start + block]

    def read_block(index):
        values, targets = tf.numpy_function(read, [index], (dtype, label_dtype), stateful=False)
        values.set_shape((None, *row_shape))
        targets.set_shape((None, *labels.shape[1:]))
        return values, targets

    return -(-len(examples) // block), read_block, block


def _blocks(examples: Examples, shuffle_seed: int | None) -> tf.data.Dataset:
    """Blocks of consecutive rows read from the source, in a shuffled order if a seed is given."""
    count, read_block, _ = _block_reader(examples)
    dataset = tf.data.Dataset.range(count)
    if shuffle_seed is not None and count > 1:
        dataset = dataset.shuffle(count, seed=shuffle_seed, reshuffle_each_iteration=True)
    return dataset.map(read_block, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _in_memory_batches(examples: Examples, batch_size: int, shuffle_seed: int | None) -> tf.data.Dataset:
    images, labels = examples.tensors()
    indices = tf.data.Dataset.range(len(examples))
    if shuffle_seed is not None:
        indices = indices.shuffle(len(examples), seed=shuffle_seed, reshuffle_each_iteration=True)
    return indices.batch(batch_size).map(lambda index: (tf.gather(images, index),
                                                        tf.gather(labels, index)))


def _streamed_batches(examples: Examples, batch_size: int, shuffle_seed: int | None) -> tf.data.Dataset:
    dataset = _blocks(examples, shuffle_seed).unbatch()
    if shuffle_seed is not None:
        buffer = max(batch_size, SHUFFLE_BUFFER_BYTES // max(examples.nbytes // len(examples), 1))
        dataset = dataset.shuffle(min(buffer, len(examples)), seed=shuffle_seed + 1,
                                  reshuffle_each_iteration=True)
    return _with_batches_known(dataset.batch(batch_size), len(examples), batch_size)


def _with_batches_known(batches: tf.data.Dataset, count: int, batch_size: int) -> tf.data.Dataset:
    """Tell tf.data how many batches a streamed split makes (unbatching loses it), so Keras
    shows whole progress bars and does not warn that the input ran out."""
    return batches.apply(tf.data.experimental.assert_cardinality(-(-count // batch_size)))


def streams(examples: Examples) -> bool:
    """Whether :func:`make_pipeline` streams ``examples`` from disk (too large for memory)."""
    return not examples.in_memory and examples.nbytes > in_memory_limit()


def raw_batches(
    data: Examples | tf.data.Dataset, batch_size: int, shuffle_seed: int | None = None
) -> tf.data.Dataset:
    """Batches of (images, labels) as stored (uint8 pixels stay uint8), shuffled each epoch
    when ``shuffle_seed`` is given. ``data`` is :class:`Examples` (see the module doc for when
    it streams) or an unbatched ``tf.data.Dataset``, which is cached in memory as it is."""
    if isinstance(data, Examples):
        make = _streamed_batches if streams(data) else _in_memory_batches
        return make(data, batch_size, shuffle_seed)
    data = data.cache()
    if shuffle_seed is not None:
        size = int(data.cardinality())
        data = data.shuffle(max(size, 1), seed=shuffle_seed, reshuffle_each_iteration=True)
    return data.batch(batch_size)


def make_pipeline(
    data: Examples | tf.data.Dataset,
    batch_size: int,
    shuffle_seed: int | None = None,
    augment: Any = None,
) -> tf.data.Dataset:
    """Batches of ``(float32 images, labels)`` from :func:`raw_batches`, cast to float32 and
    augmented (a Keras preprocessing layer or ``Pipeline``) a whole batch at a time, in
    parallel, and prefetched.
    """
    if isinstance(augment, list):
        raise KzooError("this augmentation needs to know each image and the epoch (an "
                        "alternating flip); only `kzoo train` (epoch_batches) applies it")
    batches = raw_batches(data, batch_size, shuffle_seed)

    def to_float(images, labels):
        images = tf.cast(images, tf.float32)
        if augment is not None:
            images = augment(images, training=True)
        return images, labels

    return batches.map(to_float, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)


# --- epochs that are a function of (seed, epoch) alone -----------------------------------------


def _epoch_seed(seed: int, epoch, salt: int = 0):
    """A stateless seed (shape [2], int64) for ``epoch`` of a run seeded ``seed``."""
    return tf.stack([tf.constant(seed * 7919 + salt, tf.int64), tf.cast(epoch, tf.int64)])


def _permutation(count, seed) -> tf.Tensor:
    count = tf.cast(count, tf.int64)
    return tf.random.experimental.index_shuffle(tf.range(count), seed, count - 1)


def _epoch_order(examples: Examples, batch_size: int, seed: int, epoch,
                 tensors=None) -> tf.data.Dataset:
    """One epoch of raw batches ``(images, labels, positions)``, in an order that only
    ``seed`` and ``epoch`` decide; from ``tensors`` (the examples in memory, made outside any
    traced function) where given. ``positions`` say which of ``examples`` each one is."""
    if tensors is not None:
        images, labels = tensors
        order = _permutation(len(examples), _epoch_seed(seed, epoch))
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size).map(
            lambda index: (tf.gather(images, index), tf.gather(labels, index), index))
    count, read_block, block = _block_reader(examples)
    total = len(examples)

    def read_with_positions(index):
        start = index * block
        return (*read_block(index), tf.range(start, tf.minimum(start + block, total)))

    order = tf.data.Dataset.from_tensor_slices(_permutation(count, _epoch_seed(seed, epoch, 1)))
    source = order.map(read_with_positions, num_parallel_calls=tf.data.AUTOTUNE,
                       deterministic=True)
    window = max(batch_size, SHUFFLE_BUFFER_BYTES // max(examples.nbytes // len(examples), 1))

    def mix(position, triple):  # a bounded shuffle: each window of examples permuted
        order = _permutation(tf.shape(triple[1], out_type=tf.int64)[0],
                             _epoch_seed(seed, epoch * 1_000_003 + position, 2))
        return tuple(tf.gather(part, order) for part in triple)

    batches = source.unbatch().batch(window).enumerate().map(mix).unbatch().batch(batch_size)
    return _with_batches_known(batches, len(examples), batch_size)


def _reseeded(augment, seed: int):
    """``augment`` applied to batch ``index`` of ``epoch`` with its random draws reset to a
    function of (seed, epoch, index) first, so that they do not depend on what ran before.
    Keras's image layers draw from a ``keras.random.SeedGenerator``, their own on TensorFlow
    and another one inside tf.data on other backends (:func:`kzoo._compat.pipeline_seed_generator`)."""
    from kzoo._compat import pipeline_seed_generator

    stack = augment if isinstance(augment, list) else getattr(augment, "layers", [augment])
    generators = [pipeline_seed_generator(layer) for layer in stack if hasattr(layer, "generator")]

    def apply(epoch, index, images, positions):
        for number, generator in enumerate(generators):
            state = _epoch_seed(seed, epoch, 3 + number) + tf.stack([tf.constant(0, tf.int64),
                                                                      index * 65_537])
            generator.state.assign(tf.cast(state, generator.state.dtype))
        for layer in stack:
            images = (layer(images, example_ids=positions, epoch=epoch)
                      if getattr(layer, "uses_example_ids", False) else layer(images, training=True))
        return images

    return apply


def epoch_batches(
    examples: Examples,
    batch_size: int,
    seed: int,
    augment: Any = None,
    first_epoch: int = 0,
    epochs: int = 1,
) -> tf.data.Dataset:
    """Training batches of ``(float32 images, labels)`` for epochs ``first_epoch`` to
    ``epochs - 1``, one after another: each epoch's order, and each batch's augmentation, are a
    function of ``(seed, epoch)`` alone, so a run resumed at any epoch sees exactly the batches
    an uninterrupted run would. Give ``model.fit`` ``steps_per_epoch=ceil(len(examples) /
    batch_size)`` and ``initial_epoch=first_epoch``.
    """
    augmented = _reseeded(augment, seed) if augment is not None else None
    tensors = None if streams(examples) else examples.tensors()

    def one_epoch(epoch):
        def to_float(index, batch):
            images, labels, positions = batch
            images = tf.cast(images, tf.float32)
            if augmented is not None:
                images = augmented(epoch, index, images, positions)
            return images, labels

        # one batch at a time: the augmentation resets shared random state before each batch
        return _epoch_order(examples, batch_size, seed, epoch, tensors).enumerate().map(to_float)

    epochs_left = tf.data.Dataset.range(first_epoch, max(epochs, first_epoch + 1))
    return epochs_left.flat_map(one_epoch).prefetch(2)
