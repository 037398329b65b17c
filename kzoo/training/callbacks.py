"""Keras callbacks for watching a model learn, and for the training tricks of fast recipes
(:class:`Lookahead`, :class:`FreezeAfter`).

:class:`ConfusionMatrixPrinter` prints the confusion matrix after every epoch, as the Torch demo
(``train-on-mnist.lua`` and its ``optim.ConfusionMatrix``) does while it trains.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kzoo.analysis.evaluation import confusion_matrix, format_confusion_matrix, predict_labels


def _batched(data: Any, batch_size: int) -> tf.data.Dataset:
    """``data`` as a batched ``(images, labels)`` dataset: a dataset (batched or not: one
    whose elements have a first dimension of unknown size is taken as batched) or two arrays."""
    if isinstance(data, tf.data.Dataset):
        first = data.element_spec[0].shape
        return data if first.rank and first[0] is None else data.batch(batch_size)
    images, labels = data
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size)


class ConfusionMatrixPrinter(keras.callbacks.Callback):
    """After every ``every`` epochs, print the model's accuracy and confusion matrix on ``data``
    (rows: true class, columns: predicted class) and keep the matrix in ``matrices``.

    ``data`` is a ``tf.data`` dataset of ``(image, label)`` pairs, batched or not (the splits
    of :func:`kzoo.load_dataset` as they are), or a pair of arrays ``(images, labels)``.

    >>> splits = kzoo.load_dataset("mnist_sample")
    >>> printer = ConfusionMatrixPrinter(splits.validation, splits.class_names)
    >>> model.fit(splits.train.batch(64), epochs=3, callbacks=[printer])
    """

    def __init__(
        self,
        data: Any,
        class_names: Sequence[str],
        every: int = 1,
        batch_size: int = 256,
        name: str = "validation",
    ):
        super().__init__()
        self.data = _batched(data, batch_size)
        self.class_names = [str(name) for name in class_names]
        self.every = max(1, int(every))
        self.name = name
        self.matrices: list[np.ndarray] = []

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if (epoch + 1) % self.every:
            return
        truth, predicted = predict_labels(self.model, self.data)
        matrix = confusion_matrix(truth, predicted, max(len(self.class_names), 2))
        self.matrices.append(matrix)
        accuracy = float(np.trace(matrix) / max(matrix.sum(), 1))
        print(f"epoch {epoch + 1}: {self.name} accuracy {accuracy:.4f} "
              f"({int(np.trace(matrix))} of {int(matrix.sum())} right)")
        print(format_confusion_matrix(matrix, self.class_names), flush=True)


class Lookahead(keras.callbacks.Callback):
    """Every ``every`` optimizer steps, move an exponential moving average of the weights
    towards the weights, then set the weights to it (airbench's Lookahead-style EMA; Zhang et
    al. 2019's Lookahead with an EMA as its slow weights). The average's decay grows with
    training, ``decay ** every * (step / total_steps) ** 3``: nothing early, strong at the end,
    where the weights are set to the average one last time.

    Batch norm's moving statistics are averaged with the weights. Works with any
    ``steps_per_execution``: it counts the optimizer's steps. The average is part of a resumable
    run's state: :class:`kzoo.training.checkpoints.EpochCheckpoints` saves it (:meth:`get_state`)
    and puts it back (:meth:`set_state`) before training goes on.
    """

    def __init__(self, total_steps: int, every: int = 5, decay: float = 0.95):
        super().__init__()
        self.total_steps, self.every, self.decay = max(1, int(total_steps)), int(every), decay
        self.average: list | None = None
        self.updates_done = 0
        self._restored: list | None = None

    def _variables(self, model=None):
        return [v for v in (model or self.model).weights if "float" in str(v.dtype)]

    def get_state(self) -> list[np.ndarray] | None:
        """The average, for a checkpoint; ``None`` before training has begun."""
        return None if self.average is None else [np.array(value) for value in self.average]

    def set_state(self, model: keras.Model, values: list[np.ndarray]) -> None:
        """Continue from an average a checkpoint of ``model`` holds, instead of starting it
        from the weights; ``ValueError`` where it does not fit the model."""
        shapes = [tuple(variable.shape) for variable in self._variables(model)]
        if [tuple(np.shape(value)) for value in values] != shapes:
            raise ValueError("the checkpoint's Lookahead average does not fit the model")
        self._restored = [np.array(value) for value in values]

    def on_train_begin(self, logs=None):
        if self._restored is not None:  # a resumed run: the average goes on where it stopped
            self.average, self._restored = self._restored, None
        else:
            self.average = [keras.ops.convert_to_numpy(v.value) for v in self._variables()]
        self.updates_done = int(self.model.optimizer.iterations.numpy()) // self.every

    def _update(self, decay: float) -> None:
        for index, variable in enumerate(self._variables()):
            current = keras.ops.convert_to_numpy(variable.value)
            self.average[index] = decay * self.average[index] + (1 - decay) * current
            variable.assign(self.average[index])

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        while self.updates_done < step // self.every:
            self.updates_done += 1
            progress = min(1.0, self.updates_done * self.every / self.total_steps)
            self._update(self.decay ** self.every * progress ** 3)

    def on_train_end(self, logs=None):
        if int(self.model.optimizer.iterations.numpy()) >= self.total_steps:
            self._update(1.0)  # end on the average itself


class FreezeAfter(keras.callbacks.Callback):
    """Stop training the layers whose names match a pattern once they have trained a given
    number of epochs, e.g. ``{"whiten": 3}`` (the train step is rebuilt without them)."""

    def __init__(self, epochs_by_pattern: dict[str, int]):
        super().__init__()
        self.epochs_by_pattern = dict(epochs_by_pattern)

    def on_epoch_begin(self, epoch, logs=None):
        frozen = [layer for layer in self.model.layers if layer.trainable and any(
            fnmatch.fnmatchcase(layer.name, pattern) and epoch >= epochs
            for pattern, epochs in self.epochs_by_pattern.items())]
        if frozen:
            for layer in frozen:
                layer.trainable = False
            self.model.make_train_function(force=True)


class KeepGoodEpoch(keras.callbacks.Callback):
    """Which epoch's weights a run ends with, for every kind of run.

    ``keep="best"`` (fine-tuning): the epoch with the best validation accuracy (ties: the lower
    validation loss), restored at the end; with ``baseline`` (the accuracy and loss of the
    weights training starts from), those weights are kept unless an epoch beats them.
    ``keep="last"`` (training a recipe): the last epoch whose loss is finite. An epoch whose loss
    is not finite is never kept (``nan_epoch`` is the first such). ``save``, a function of the
    model, is called for each newly kept epoch, so a killed or diverged run keeps it on disk.
    ``best_epoch`` is the kept epoch (0-based), or ``None`` for the starting weights.
    """

    def __init__(self, keep: str = "best", baseline: tuple[float, float] | None = None,
                 save=None):
        super().__init__()
        if keep not in ("best", "last"):
            raise ValueError(f"keep={keep!r}; expected 'best' or 'last'")
        self.keep, self.save = keep, save
        self.best = None if baseline is None else (baseline[0], -baseline[1])
        self.best_epoch: int | None = None
        self.best_weights = None
        self.last_epoch: int | None = None
        self.nan_epoch: int | None = None

    def on_train_begin(self, logs=None):
        if self.best is not None and self.keep == "best":
            self.best_weights = self.model.get_weights()

    def _score(self, epoch: int, logs: dict) -> tuple[float, ...] | None:
        loss = logs.get("loss")
        if loss is None or not np.isfinite(loss):
            self.nan_epoch = epoch if self.nan_epoch is None else self.nan_epoch
            return None
        if self.keep == "last":
            return (float(epoch),)
        if "val_accuracy" not in logs:
            return None
        score = (float(logs["val_accuracy"]), -float(logs.get("val_loss", 0.0)))
        return score if all(np.isfinite(value) for value in score) else None

    def on_epoch_end(self, epoch, logs=None):
        self.last_epoch = epoch
        score = self._score(epoch, logs or {})
        if score is None or (self.best is not None and score <= self.best):
            return
        self.best, self.best_epoch = score, epoch
        if self.keep == "best":
            self.best_weights = self.model.get_weights()
        if self.save is not None:
            self.save(self.model)

    def on_train_end(self, logs=None):
        if self.best_weights is not None and self.best_epoch != self.last_epoch:
            self.model.set_weights(self.best_weights)
        self.best_weights = None  # free the copy

    @property
    def best_scores(self) -> tuple[float, float] | None:
        """The kept epoch's (validation accuracy, validation loss), with ``keep="best"``."""
        if self.best is None or self.keep != "best":
            return None
        return (self.best[0], -self.best[1])
