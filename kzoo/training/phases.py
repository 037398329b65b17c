"""The two phases of fine-tuning, and the learning-rate sweep between them; each is a piece
that :func:`kzoo.training.finetune.fine_tune` runs inside its :class:`~kzoo.training.run.Run`.

1. **head**: the new classifier head trains on the frozen backbone, which runs in inference
   mode. Where that is faster (a CPU's usual case), the backbone's pooled features are computed
   once, for ``feature_views`` copies of the training images (the first plain, the others
   augmented), and the head trains on those in milliseconds an epoch.
2. **fine-tune**: the top ``unfreeze`` fraction of the backbone's layers is unfrozen and the
   whole model trains with augmentation at the recipe's (lower) learning rate. The backbone's
   BatchNorm layers stay frozen throughout, which in Keras 3 is what keeps them in inference
   mode with their ImageNet statistics (the BatchNorm trap: the outer model's ``training=True``
   overrides the backbone's ``training=False`` call, keras-team/keras#20285). Discriminative
   (per-layer) learning rates, which Keras lacks, come from
   :func:`kzoo.training.optimizers.with_lr_multipliers`.

The parts of the model (backbone, pooling, head) come from its declared contract,
:func:`kzoo.models.parts.classifier_parts`.
"""

from __future__ import annotations

import math
import shutil
import time
from typing import Any, NamedTuple

import keras
import numpy as np

from kzoo.analysis.features import backbone_features
from kzoo.data.datasets import Splits
from kzoo.data.locations import scratch_dir
from kzoo.data.pipeline import make_pipeline
from kzoo.models.blocks import ClassifierInfo
from kzoo.models.parts import classifier_parts
from kzoo.recipes.recipe import FineTune, Optimizer, Recipe
from kzoo.training.callbacks import KeepGoodEpoch
from kzoo.training.distributed import Cluster, Distributed
from kzoo.training.flops import steps_per_execution_for
from kzoo.training.lr_finder import STEPS, LRFind, sweep
from kzoo.training.optimizers import (
    class_weights,
    constant_rate,
    discriminative_multipliers,
    make_optimizer,
    with_lr_multipliers,
)

LOSS = "sparse_categorical_crossentropy"


# --- freezing, unfreezing, learning rates ------------------------------------------------------


def unfreeze_top(model: keras.Model, fraction: float) -> list[keras.layers.Layer]:
    """Make the top ``fraction`` of the backbone's weighted layers trainable, the rest and every
    BatchNorm layer frozen (so it stays in inference mode), and return the unfrozen layers,
    bottom first.
    """
    backbone = classifier_parts(model).backbone
    weighted = [layer for layer in backbone.layers if layer.weights]
    first = len(weighted) - round(len(weighted) * fraction)
    backbone.trainable = fraction > 0
    unfrozen = []
    for index, layer in enumerate(weighted):
        is_batchnorm = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = index >= first and not is_batchnorm
        if layer.trainable:
            unfrozen.append(layer)
    return unfrozen


def fine_tuning_optimizer(config: Optimizer, settings: FineTune, unfrozen, steps_per_epoch: int,
                          epochs: int) -> keras.optimizers.Optimizer:
    """Phase two's optimizer: ``config``'s, with the recipe's per-variable multipliers and the
    discriminative ones of the ``unfrozen`` layers."""
    optimizer = make_optimizer(config, steps_per_epoch, epochs)
    multipliers = {**settings.lr_multipliers,
                   **discriminative_multipliers(unfrozen, settings.discriminative_lr)}
    return with_lr_multipliers(optimizer, multipliers) if multipliers else optimizer


def fine_tuning_sweep(model: keras.Model, splits: Splits, recipe: Recipe, augment,
                      steps: int = STEPS) -> LRFind:
    """The learning-rate finder's sweep for phase two: the top of the backbone unfrozen, the
    recipe's optimizer at a constant rate (per-layer multipliers kept), on augmented training
    batches. The model's weights are put back afterwards."""
    settings = recipe.finetune
    unfrozen = unfreeze_top(model, settings.unfreeze)
    optimizer = fine_tuning_optimizer(constant_rate(recipe.optimizer), settings, unfrozen, 1, 1)
    model.compile(optimizer=optimizer, loss=LOSS)
    batches = make_pipeline(splits.examples["train"], recipe.batch_size,
                            shuffle_seed=recipe.seed, augment=augment).repeat()
    return sweep(model, batches, steps=steps)  # the finder puts the weights back


# --- phase one: the head ----------------------------------------------------------------------


def _should_cache(settings: FineTune, augment) -> tuple[bool, int]:
    views = settings.feature_views if augment is not None else 1
    if settings.cache_features == "auto":
        # A view costs one forward pass over the images, as does an uncached epoch.
        return views < settings.head_epochs, views
    return bool(settings.cache_features), views


class PhaseResult(NamedTuple):
    """One phase's history, timings, and the epoch whose weights it kept (0-based; ``None``:
    the weights it started from)."""

    history: dict[str, list[float]]
    timings: dict[str, float]
    kept_epoch: int | None = None
    kept_scores: tuple[float, float] | None = None


def _phase_result(history, timings, keep: KeepGoodEpoch | None) -> PhaseResult:
    if keep is None:  # --keep-last: the last epoch's weights
        epochs = len(history.get("loss", []))
        return PhaseResult(history, timings, epochs - 1 if epochs else None)
    return PhaseResult(history, timings, keep.best_epoch, keep.best_scores)


def _callbacks(recipe: Recipe, baseline=None) -> tuple[list, KeepGoodEpoch | None]:
    keep = KeepGoodEpoch("best", baseline) if recipe.finetune.keep_best else None
    return [keras.callbacks.TerminateOnNaN(), *([keep] if keep else [])], keep


def train_head(
    model: keras.Model, splits: Splits, recipe: Recipe, augment, verbose: str | int = "auto",
) -> PhaseResult:
    """Phase one: the head on the frozen backbone."""
    settings = recipe.finetune
    classifier_parts(model).backbone.trainable = False
    timings: dict[str, float] = {}
    if settings.head_epochs == 0:
        return PhaseResult({}, timings)
    train, validation = splits.examples["train"], splits.examples["validation"]
    weights = class_weights(recipe, train.labels, len(splits.class_names))
    optimizer = keras.optimizers.Adam(settings.head_learning_rate)
    callbacks, keep = _callbacks(recipe)
    cache, views = _should_cache(settings, augment)
    batch = recipe.batch_size
    if not cache:
        model.compile(optimizer=optimizer, loss=LOSS, metrics=["accuracy"])
        started = time.perf_counter()
        history = model.fit(
            make_pipeline(train, batch, shuffle_seed=recipe.seed, augment=augment),
            validation_data=make_pipeline(validation, batch), epochs=settings.head_epochs,
            verbose=verbose, shuffle=False, callbacks=callbacks, class_weight=weights,
        )
        timings["head_s"] = time.perf_counter() - started
        return _phase_result(history.history, timings, keep)

    started = time.perf_counter()
    extractor = classifier_parts(model).features_model()
    scratch = scratch_dir()
    try:
        train_views = [backbone_features(extractor, train, batch, augment if view else None,
                                 scratch / f"train-{view}.f16") for view in range(views)]
        val_features = backbone_features(extractor, validation, batch, None, scratch / "validation.f16")
        timings["features_s"] = time.perf_counter() - started
        where = "in memory" if val_features.in_memory else "on disk"
        print(f"kzoo: cached backbone features of {views} view(s) of the training images "
              f"({where}, {timings['features_s']:.1f}s)")
        # Epoch e trains on view e mod views: every epoch is one pass over the images, as uncached.
        dataset = make_pipeline(train_views[0], batch, shuffle_seed=recipe.seed)
        for index, features in enumerate(train_views[1:], start=1):
            dataset = dataset.concatenate(make_pipeline(features, batch,
                                                        shuffle_seed=recipe.seed + index))
        head = classifier_parts(model).head_model(skip=ClassifierInfo)
        head.compile(optimizer=optimizer, loss=LOSS, metrics=["accuracy"],
                     steps_per_execution=steps_per_execution_for(
                         recipe.steps_per_execution, head, batch, math.ceil(len(train) / batch)))
        started = time.perf_counter()
        history = head.fit(
            dataset.repeat(), steps_per_epoch=math.ceil(len(train) / batch),
            validation_data=make_pipeline(val_features, batch), epochs=settings.head_epochs,
            verbose=verbose, shuffle=False, callbacks=callbacks, class_weight=weights,
        )
        timings["head_s"] = time.perf_counter() - started
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return _phase_result(history.history, timings, keep)


# --- phase two: fine-tuning --------------------------------------------------------------------


def train_top(
    model: keras.Model, splits: Splits, recipe: Recipe, augment, verbose: str | int = "auto",
    baseline: tuple[float, float] | None = None, distributed: Distributed | None = None,
) -> PhaseResult:
    """Phase two: the top of the backbone unfrozen, at the recipe's learning rate. With
    ``keep_best``, the model it started from (validation ``baseline``: accuracy, loss) is kept
    unless an epoch beats it. With ``distributed``, ``model`` was made in its scope and trains
    over its devices and processes."""
    distributed = distributed or Distributed(Cluster())
    settings = recipe.finetune
    if settings.unfreeze == 0 or recipe.epochs == 0:
        return PhaseResult({}, {})
    train, validation = splits.examples["train"], splits.examples["validation"]
    unfrozen = unfreeze_top(model, settings.unfreeze)
    steps = math.ceil(len(train) / recipe.batch_size)
    with distributed.scope():  # the optimizer's variables too
        optimizer = fine_tuning_optimizer(recipe.optimizer, settings, unfrozen, steps,
                                          recipe.epochs)
        model.compile(optimizer=optimizer, loss=LOSS, metrics=["accuracy"],
                      steps_per_execution=distributed.steps_per_execution(steps_per_execution_for(
                          recipe.steps_per_execution, model, recipe.batch_size, steps)))
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    print(f"kzoo: fine-tuning the top {len(unfrozen)} layers of the backbone "
          f"({trainable:,} trainable parameters) for {recipe.epochs} epochs")
    callbacks, keep = _callbacks(recipe, baseline)
    started = time.perf_counter()
    together = distributed.stopping_together(
        "Fine-tuning runs cannot be resumed: start the run again on every process")
    with together, distributed.scope():
        history = model.fit(
            distributed.shard(make_pipeline(train, recipe.batch_size, shuffle_seed=recipe.seed,
                                            augment=augment)),
            validation_data=distributed.shard(make_pipeline(validation, recipe.batch_size)),
            epochs=recipe.epochs, verbose=verbose if distributed.is_chief else 0, shuffle=False,
            callbacks=callbacks,
            class_weight=class_weights(recipe, train.labels, len(splits.class_names)),
        )
    return _phase_result(history.history, {"finetune_s": time.perf_counter() - started}, keep)


def kept_epoch(head: PhaseResult, top: PhaseResult) -> dict[str, Any] | None:
    """The epoch (1-based, counted over both phases) whose weights the model ends with."""
    head_epochs = len(head.history.get("loss", []))
    if top.history and top.kept_epoch is not None:
        return {"epoch": head_epochs + top.kept_epoch + 1, "phase": "fine-tune"}
    if head.kept_epoch is not None:
        return {"epoch": head.kept_epoch + 1, "phase": "head"}
    return None


