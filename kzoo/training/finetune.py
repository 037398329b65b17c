"""Transfer learning on a folder of images: ``fine_tune`` (the ``kzoo finetune`` command).

"Don't be a hero": take a backbone pretrained on ImageNet and fine-tune it on your own small
folder, in two phases, as fastai's ``fine_tune`` does:

1. **head**: the new classifier head trains on the frozen backbone, which runs in inference
   mode. Where that is faster (a CPU's usual case), the backbone's pooled features are computed
   once, for ``feature_views`` copies of the training images (the first plain, the others
   augmented), and the head trains on those in milliseconds an epoch.
   Every image is framed the same way in training and prediction: the central ``center_crop``
   of it, undistorted (0.875 by default), resized to the input size.
2. **fine-tune**: the top ``unfreeze`` fraction of the backbone's layers is unfrozen and the
   whole model trains with augmentation at the recipe's (lower) learning rate. The backbone's
   BatchNorm layers stay frozen throughout, which in Keras 3 is what keeps them in inference
   mode with their ImageNet statistics (the BatchNorm trap: the outer model's ``training=True``
   overrides the backbone's ``training=False`` call, keras-team/keras#20285). Discriminative
   (per-layer) learning rates, which Keras lacks, come from :func:`with_lr_multipliers`.

The run directory holds ``model.keras`` (loads with ``safe_mode=True``; it carries its class
names and image framing), ``class_names.json``, ``recipe.yaml``, ``history.csv``,
``metrics.json``, ``confusion_matrix.csv``, ``predictions.csv`` (every validation image),
``skipped.csv`` and ``report.html`` with its pictures in ``report/``.

>>> result = kzoo.fine_tune("~/photos/ants_vs_bees", backbone="mobilenet_v2")
>>> result.metrics["val_accuracy"]
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import keras
import numpy as np

from kzoo.analysis.evaluation import (
    classification_metrics,
    format_confusion_matrix,
    format_per_class,
)
from kzoo.analysis.features import backbone_features, pooled_features_model
from kzoo.analysis.tta import predict_with_tta, scores
from kzoo.data.augment import augmentation as make_augmentation
from kzoo.data.datasets import (
    Splits,
    data_dirs,
    find_image_folder,
    image_folder,
    print_data_summary,
)
from kzoo.data.images import describe_skipped
from kzoo.data.locations import scratch_dir
from kzoo.data.pipeline import Examples, make_pipeline, streams
from kzoo.errors import KzooError
from kzoo.files import write_csv, write_json
from kzoo.models.blocks import ClassifierInfo, with_classifier_info
from kzoo.models.registry import build, get_spec, list_models, load_model
from kzoo.models.saving import save_model
from kzoo.models.weights import search_weights_in
from kzoo.recipes.recipe import FineTune, Optimizer, Recipe
from kzoo.recipes.zoo import load_recipe
from kzoo.training.distributed import Cluster, Distributed, outside_distribution, start
from kzoo.training.flops import steps_per_execution_for
from kzoo.training.lr_find import RULE, STEPS, LRFind, sweep, write_sweep
from kzoo.training.optimizers import (
    class_weights,
    constant_rate,
    discriminative_multipliers,
    make_optimizer,
    with_lr_multipliers,
)
from kzoo.training.precision import precision_policy
from kzoo.training.runs import (
    TrainResult,
    choose_run_dir,
    require_shared_run_dir,
    run_metrics,
    save_run_recipe,
    seed_everything,
    start_run_dir,
    worker_result,
    write_history,
)

DEFAULT_BACKBONE = "resnet50"
LOSS = "sparse_categorical_crossentropy"
FROM_RECIPE: Any = object()  # ``weights`` not given: the recipe's (``imagenet`` by default)


# --- the recipe ----------------------------------------------------------------------------------


def default_recipe(folder: str | os.PathLike, backbone: str = DEFAULT_BACKBONE) -> Recipe:
    """The settings ``fine_tune`` uses when no recipe is given: ImageNet weights, the
    ``imagenet`` augmentation preset, Adam with a cosine schedule, two phases.
    """
    name = Path(folder).expanduser().resolve().name or "images"
    return Recipe(
        name=f"finetune-{name}",
        model=backbone,
        dataset=str(folder),
        description=f"{backbone} pretrained on ImageNet, fine-tuned on {folder}",
        model_options={"weights": "imagenet"},
        augmentation="imagenet",
        optimizer=Optimizer(name="adam", learning_rate=3e-5, schedule="cosine"),
        batch_size=32,
        epochs=4,
        validation_split=0.2,
        finetune=FineTune(),
    )


def finetune_recipe(
    folder: str | os.PathLike | None = None,
    recipe: str | os.PathLike | Recipe | None = None,
    *,
    backbone: str | None = None,
    weights: Any = FROM_RECIPE,
    image_size: int | Sequence[int] | None = None,
    model_options: Mapping[str, Any] | None = None,
    center_crop: Any = FROM_RECIPE,
    **overrides: Any,
) -> Recipe:
    """The recipe a fine-tuning run follows: ``recipe`` (or :func:`default_recipe`) with
    ``folder`` as its data and the other arguments as overrides (``None`` leaves a value;
    for ``weights`` and ``center_crop``, where ``None`` is a value, leaving them out does).
    """
    if recipe is None:
        if folder is None:
            raise KzooError("nothing to fine-tune on: pass an image FOLDER (one folder per class) "
                            "or a recipe whose dataset is one")
        base = default_recipe(folder, backbone or DEFAULT_BACKBONE)
    else:
        base = load_recipe(recipe)
        if folder is not None:
            base = dataclasses.replace(base, dataset=str(folder))
    if base.finetune is None:
        base = dataclasses.replace(base, finetune=FineTune())
    kwargs = dict(base.model_options)
    if backbone is not None and backbone != base.model:
        options = get_spec(backbone).options
        kwargs = {key: value for key, value in kwargs.items() if key in options}
        kwargs.setdefault("weights", "imagenet")
        base = dataclasses.replace(base, model=backbone)
    kwargs.update(model_options or {})
    if weights is not FROM_RECIPE:
        kwargs["weights"] = None if weights is None else str(weights)
    if image_size is not None:
        side = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        kwargs["input_shape"] = [int(side[0]), int(side[1]), 3]
    recipe = dataclasses.replace(base, model_options=kwargs).with_overrides(**overrides)
    if center_crop is None:  # squash whole images: a value, so not an override with_overrides takes
        recipe = dataclasses.replace(recipe, finetune=dataclasses.replace(recipe.finetune,
                                                                          center_crop=None))
    elif center_crop is not FROM_RECIPE:
        recipe = recipe.with_overrides(center_crop=center_crop)
    return recipe


# --- freezing, unfreezing, learning rates ------------------------------------------------------


def backbone_of(model: keras.Model) -> keras.Model:
    """The pretrained backbone inside a zoo model (its layer named ``backbone``)."""
    try:
        return model.get_layer("backbone")
    except ValueError:
        choices = ", ".join(list_models(tag="pretrained"))
        raise KzooError(
            f"model {model.name!r} has no pretrained backbone to fine-tune; pick one of "
            f"{choices} (`kzoo list --tag pretrained`)"
        ) from None


def unfreeze_top(model: keras.Model, fraction: float) -> list[keras.layers.Layer]:
    """Make the top ``fraction`` of the backbone's weighted layers trainable, the rest and every
    BatchNorm layer frozen (so it stays in inference mode), and return the unfrozen layers,
    bottom first.
    """
    backbone = backbone_of(model)
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


# --- phase one: the head ----------------------------------------------------------------------


def _head(model: keras.Model) -> keras.Model:
    """The layers after the pooling, as a model on pooled features (weights shared)."""
    names = [layer.name for layer in model.layers]
    inputs = keras.Input(shape=model.get_layer("pool").output.shape[1:], name="features")
    x = inputs
    for layer in model.layers[names.index("pool") + 1:]:
        if not isinstance(layer, ClassifierInfo):
            x = layer(x)
    return keras.Model(inputs, x, name="head")


class KeepBestEpoch(keras.callbacks.Callback):
    """At the end of training, restore the weights of the epoch with the best validation
    accuracy (ties: the lower validation loss). ``baseline`` is the (accuracy, loss) of the
    weights training starts from: they are kept unless an epoch beats them. ``best_epoch`` is
    the kept epoch (0-based), or ``None`` for the starting weights."""

    def __init__(self, baseline: tuple[float, float] | None = None):
        super().__init__()
        self.best = None if baseline is None else (baseline[0], -baseline[1])
        self.best_epoch: int | None = None
        self.best_weights = None
        self.last_epoch: int | None = None

    def on_train_begin(self, logs=None):
        if self.best is not None:
            self.best_weights = self.model.get_weights()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.last_epoch = epoch
        if "val_accuracy" not in logs:
            return
        score = (float(logs["val_accuracy"]), -float(logs.get("val_loss", 0.0)))
        if not all(math.isfinite(v) for v in score):
            return
        if self.best is None or score > self.best:
            self.best, self.best_epoch, self.best_weights = score, epoch, self.model.get_weights()

    def on_train_end(self, logs=None):
        if self.best_weights is not None and self.best_epoch != self.last_epoch:
            self.model.set_weights(self.best_weights)
        self.best_weights = None  # free the copy

    @property
    def best_scores(self) -> tuple[float, float] | None:
        return None if self.best is None else (self.best[0], -self.best[1])


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


def _phase_result(history, timings, keep: KeepBestEpoch | None) -> PhaseResult:
    if keep is None:  # --keep-last: the last epoch's weights
        epochs = len(history.get("loss", []))
        return PhaseResult(history, timings, epochs - 1 if epochs else None)
    return PhaseResult(history, timings, keep.best_epoch, keep.best_scores)


def _callbacks(recipe: Recipe, baseline=None) -> tuple[list, KeepBestEpoch | None]:
    keep = KeepBestEpoch(baseline) if recipe.finetune.keep_best else None
    return [keras.callbacks.TerminateOnNaN(), *([keep] if keep else [])], keep


def train_head(
    model: keras.Model, splits: Splits, recipe: Recipe, augment, verbose: str | int = "auto",
) -> PhaseResult:
    """Phase one: the head on the frozen backbone."""
    settings = recipe.finetune
    backbone_of(model).trainable = False
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
    extractor = pooled_features_model(model)
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
        head = _head(model)
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


# --- the run ----------------------------------------------------------------------------------------


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
    weights = model.get_weights()
    model.compile(optimizer=optimizer, loss=LOSS)
    batches = make_pipeline(splits.examples["train"], recipe.batch_size,
                            shuffle_seed=recipe.seed, augment=augment).repeat()
    try:
        return sweep(model, batches, steps=steps)
    finally:
        model.set_weights(weights)


def _merge_history(phases: Sequence[tuple[str, dict[str, list[float]]]]) -> dict[str, list]:
    keys = ("loss", "accuracy", "val_loss", "val_accuracy")
    merged: dict[str, list] = {"epoch": [], "phase": [], **{key: [] for key in keys}}
    for phase, history in phases:
        for index in range(len(history.get("loss", []))):
            merged["epoch"].append(len(merged["epoch"]) + 1)
            merged["phase"].append(phase)
            for key in keys:
                values = history.get(key, [])
                merged[key].append(float(values[index]) if index < len(values) else float("nan"))
    return merged


def fine_tune(
    data: str | os.PathLike | None = None,
    *,
    recipe: str | os.PathLike | Recipe | None = None,
    backbone: str | None = None,
    weights: Any = FROM_RECIPE,
    image_size: int | Sequence[int] | None = None,
    center_crop: Any = FROM_RECIPE,
    model_options: Mapping[str, Any] | None = None,
    epochs: int | None = None,
    head_epochs: int | None = None,
    learning_rate: float | str | None = None,
    head_learning_rate: float | None = None,
    batch_size: int | None = None,
    augmentation: str | None = None,
    unfreeze: float | None = None,
    discriminative_lr: float | None = None,
    lr_multipliers: Mapping[str, float] | None = None,
    cache_features: bool | str | None = None,
    feature_views: int | None = None,
    dropout: float | None = None,
    class_weight: str | None = None,
    keep_best: bool | None = None,
    seed: int | None = None,
    validation_split: float | None = None,
    precision: str | None = None,
    tta: str | None = None,
    data_dir: str | os.PathLike | None = None,
    run_dir: str | os.PathLike | None = None,
    verbose: str | int = "auto",
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    devices: str | int | None = None,
    sweep_only: bool = False,
    sweep_steps: int = STEPS,
) -> TrainResult:
    """Fine-tune a pretrained backbone on a class-per-folder image tree; see the module doc.

    ``data`` holds ``train/`` and ``val/`` (or ``validation/``) folders of class folders, or
    the class folders directly (a seeded ``validation_split`` is then held out). ``recipe``
    (a name in ``zoo_configs/``, a YAML path or a :class:`Recipe`) supplies the settings, else
    :func:`default_recipe`; every other argument overrides one, ``None`` leaving it.
    ``weights`` is ``"imagenet"`` (found in ``data_dir``/``$KZOO_DATA_DIR``'s ``weights/``,
    Keras's cache, or downloaded), a weights file, or ``None`` for random initialisation.
    ``center_crop`` frames the images (the kept central fraction; ``None``: whole, squashed).
    ``epochs`` counts the fine-tuning epochs after the ``head_epochs``. ``class_weight=
    "balanced"`` weighs the loss of each class by the inverse of its share of the training
    images. ``keep_best`` (default) ends each phase with its best validation epoch's weights.
    ``precision`` (see :mod:`kzoo.training.precision`) and ``tta`` (test-time augmentation of the final
    evaluation, see :mod:`kzoo.analysis.tta`) override the recipe's. ``coordinator``,
    ``num_processes``, ``process_id`` and ``devices`` spread the fine-tuning phase over
    processes and devices as in :func:`kzoo.train` (:mod:`kzoo.training.distributed`); the head phase,
    on cached features, runs whole on every process. ``learning_rate="auto"`` runs the
    learning-rate finder (:mod:`kzoo.training.lr_find`) on the model with its head trained and its top
    unfrozen (``sweep_steps`` steps), then fine-tunes at the suggestion; with ``sweep_only`` the
    run stops there (``kzoo lr-find FOLDER``).

    >>> model, history, metrics, run_dir = kzoo.fine_tune("ants_bees/", backbone="mobilenet_v2")
    """
    find_rate = learning_rate == "auto" or sweep_only
    recipe = finetune_recipe(
        data, recipe, backbone=backbone, weights=weights, image_size=image_size,
        center_crop=center_crop, model_options=model_options, epochs=epochs, head_epochs=head_epochs,
        learning_rate=None if learning_rate == "auto" else learning_rate,
        head_learning_rate=head_learning_rate,
        batch_size=batch_size, augmentation=augmentation, unfreeze=unfreeze,
        discriminative_lr=discriminative_lr, lr_multipliers=lr_multipliers,
        cache_features=cache_features, feature_views=feature_views,
        dropout=dropout, class_weight=class_weight, keep_best=keep_best, seed=seed,
        validation_split=validation_split, precision=precision, tta=tta,
    )
    cluster = Cluster.from_settings(coordinator, num_processes, process_id, devices)
    require_shared_run_dir(run_dir, cluster.num_processes)  # before waiting for the others
    distributed = start(cluster)
    with precision_policy(recipe.precision):
        return _fine_tune(recipe, data_dir, run_dir, verbose, distributed,
                          find_rate=find_rate, sweep_only=sweep_only, sweep_steps=sweep_steps)


def _fine_tune(recipe: Recipe, data_dir, run_dir, verbose, distributed: Distributed, *,
               find_rate: bool = False, sweep_only: bool = False,
               sweep_steps: int = STEPS) -> TrainResult:
    folders = data_dirs(data_dir)
    folder = find_image_folder(recipe.dataset, folders)
    if not folder.is_dir():
        searched = f" (nor in {', '.join(str(f) for f in folders)})" if folders else ""
        raise KzooError(f"image folder {recipe.dataset!r} does not exist{searched}; pass a folder "
                        "of class folders, or --data-dir holding it")
    if "pretrained" not in get_spec(recipe.model).tags:  # fail before any work
        raise KzooError(f"model {recipe.model!r} has no pretrained backbone to fine-tune; pick one "
                        f"of {', '.join(list_models(tag='pretrained'))}")
    make_augmentation(recipe.augmentation)
    chief = distributed.is_chief
    run_dir = choose_run_dir(recipe, run_dir, resume=False,  # checked now, created once built
                             process_id=distributed.cluster.process_id,
                             num_processes=distributed.cluster.num_processes)
    started = time.perf_counter()
    seed_everything(recipe.seed)
    spec_shape = get_spec(recipe.model).input_shape or (224, 224, 3)
    shape = tuple(recipe.model_options.get("input_shape", spec_shape))
    splits = image_folder(folder, shape[:2], shape[2], recipe.validation_split, recipe.seed,
                          center_crop=recipe.finetune.center_crop, progress=verbose != 0 and chief)
    class_names, skipped = splits.class_names, splits.skipped
    sizes = splits.sizes
    print(f"kzoo: fine-tuning {recipe.model} on {folder}: {sizes['train']} training and "
          f"{sizes['validation']} validation images"
          + (f", {sizes['test']} test images" if "test" in sizes else " (no test split)")
          + f", {len(class_names)} classes "
          f"({', '.join(class_names[:10])}{', ...' if len(class_names) > 10 else ''}); "
          f"run dir {run_dir}")
    audited = print_data_summary(splits)
    if skipped:
        print("kzoo: " + describe_skipped(skipped, root=folder) + "  (all in skipped.csv)")
    read_s = time.perf_counter() - started

    def build_model() -> keras.Model:
        with search_weights_in(data_dir, *folders):
            built = build(recipe.model, num_classes=len(class_names), **recipe.model_options)
        backbone_of(built)
        return with_classifier_info(built, class_names, recipe.finetune.center_crop)

    model = build_model()
    if chief:  # only now: bad input above leaves no run directory behind
        start_run_dir(recipe, run_dir, "finetune", data_dir, class_names)
        write_csv(run_dir / "skipped.csv", ["path", "reason"], skipped)
        write_json(run_dir / "audit.json", audited)
    augment = make_augmentation(recipe.augmentation, seed=recipe.seed)
    head = train_head(model, splits, recipe, augment, verbose if chief else 0)
    found = None
    if find_rate:
        found = fine_tuning_sweep(model, splits, recipe, augment, sweep_steps)
        recipe = recipe.with_overrides(learning_rate=found.suggestion)
        print(f"kzoo: learning-rate finder suggests {found.suggestion:.3g} for fine-tuning "
              f"({RULE}); plot: {run_dir / 'lr_find.png'}")
        if chief:
            save_run_recipe(recipe, run_dir)
            write_sweep(found, run_dir, f"fine-tuning {recipe.model} on {folder.name}")
        if sweep_only:
            return TrainResult(model, {}, {"kind": "lr_find", **found.to_dict()}, run_dir)
    model = distributed.replicate(model, build_model)  # the head phase ran whole, here
    top = train_top(model, splits, recipe, augment, verbose, baseline=head.kept_scores,
                    distributed=distributed)
    if not chief:
        return worker_result("finetune", model, run_dir, distributed.cluster.process_id)
    history = _merge_history([("head", head.history), ("fine-tune", top.history)])
    write_history(history, run_dir / "history.csv")
    if history["loss"] and not math.isfinite(history["loss"][-1]) and not recipe.finetune.keep_best:
        raise KzooError(
            f"the loss became NaN while fine-tuning; lower the learning rates (head "
            f"{recipe.finetune.head_learning_rate}, fine-tune {recipe.optimizer.learning_rate})"
        )
    kept = _kept_epoch(head, top)
    if kept is not None:
        print(f"kzoo: keeping the model of epoch {kept['epoch']} ({kept['phase']}, validation "
              f"accuracy {history['val_accuracy'][kept['epoch'] - 1]:.4f})")
    with outside_distribution():  # one process saves alone
        save_model(model, run_dir / "model.keras")
    wall_time = time.perf_counter() - started
    if distributed.replicas > 1:
        model = load_model(str(run_dir / "model.keras"))  # evaluated on one device, as saved

    metrics, probabilities = evaluate_splits(model, splits, recipe.batch_size, recipe.tta)
    write_predictions(splits.examples["validation"], probabilities["validation"], class_names,
                      run_dir / "predictions.csv")
    metrics.update(run_metrics(
        "finetune", recipe, class_names=class_names, test_split=splits.test_split, sizes=sizes,
        wall_time_s=wall_time, data_dir=data_dir,
        timings_s={"read_images": read_s, "scan_s": splits.scan.stats.seconds, **head.timings,
                   **top.timings},
    ))
    metrics.update(
        dataset=str(folder), skipped=len(skipped), epochs_run=len(history["epoch"]),
        final_val_accuracy=history["val_accuracy"][-1] if history["epoch"] else None,
        kept_epoch=kept,
        data={**splits.scan.stats.to_dict(),
              "in_memory": not any(streams(part) for part in splits.examples.values())},
        finetune=dataclasses.asdict(recipe.finetune), class_weight=recipe.class_weight,
        distribution=distributed.summary(),
    )
    if found is not None:
        metrics["learning_rate_finder"] = found.summary()
    write_json(run_dir / "metrics.json", metrics)
    write_csv(run_dir / "confusion_matrix.csv", ["true\\predicted", *class_names],
              ([name, *row] for name, row in zip(class_names, metrics["validation"]["confusion_matrix"])))
    print(format_confusion_matrix(np.asarray(metrics["validation"]["confusion_matrix"]), class_names))
    print(format_per_class(metrics["validation"]["per_class"]))

    from kzoo.analysis.reports import write_report

    write_report(run_dir, validation=splits.examples["validation"],
                 probabilities=probabilities["validation"], history=history, metrics=metrics,
                 skipped=skipped, title=f"{recipe.model} fine-tuned on {folder.name}",
                 model=model)
    figure = (f"test accuracy {metrics['test_accuracy']:.4f}, " if splits.has_test
              else "no test split; ")
    print(f"kzoo: {figure}validation accuracy {metrics['val_accuracy']:.4f} in {wall_time:.0f}s; "
          f"report: {run_dir / 'report.html'}")
    return TrainResult(model, history, metrics, run_dir)


def _kept_epoch(head: PhaseResult, top: PhaseResult) -> dict[str, Any] | None:
    """The epoch (1-based, counted over both phases) whose weights the model ends with."""
    head_epochs = len(head.history.get("loss", []))
    if top.history and top.kept_epoch is not None:
        return {"epoch": head_epochs + top.kept_epoch + 1, "phase": "fine-tune"}
    if head.kept_epoch is not None:
        return {"epoch": head.kept_epoch + 1, "phase": "head"}
    return None


def evaluate_splits(
    model: keras.Model, splits: Splits, batch_size: int, tta: str = "none",
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Validation (and, where the folder has one, test) metrics of ``model``, and the predicted
    probabilities they come from (averaged over the test-time views of ``tta``), streamed a
    batch at a time. Without a test split no test figure is reported: ``test_split`` says
    ``"validation"``. With ``tta``, the accuracies without it are reported too."""
    metrics: dict[str, Any] = {}
    probabilities: dict[str, np.ndarray] = {}
    class_names = splits.class_names
    for key in ("validation", "test"):
        if key not in splits.examples:
            continue
        part = splits.examples[key]
        batches = make_pipeline(part, batch_size)
        probabilities[key] = predict_with_tta(model, batches, tta)[0]
        metrics[key] = classification_metrics(part.labels, probabilities[key], class_names)
        if tta != "none":
            short = "val" if key == "validation" else key
            metrics[f"{short}_accuracy_without_tta"] = scores(*predict_with_tta(model, batches))[1]
    metrics.update(
        val_accuracy=metrics["validation"]["accuracy"], val_loss=metrics["validation"]["loss"],
        test_split=splits.test_split, class_names=class_names, tta=tta,
    )
    if splits.has_test:
        metrics.update(test_accuracy=metrics["test"]["accuracy"], test_loss=metrics["test"]["loss"])
    return metrics, probabilities


def write_predictions(part: Examples, probabilities: np.ndarray, class_names: list[str],
                      path: Path) -> None:
    """One row per image, sorted by file: file, true class, predicted class, its probability,
    the loss."""
    rows = sorted(zip(part.paths, part.labels, probabilities), key=lambda row: row[0])

    def lines():
        for file, label, row in rows:
            best = int(row.argmax())
            loss = -math.log(max(float(row[label]), 1e-12))
            yield [file, class_names[label], class_names[best], f"{row[best]:.6f}", f"{loss:.6f}"]

    write_csv(path, ["path", "true", "predicted", "probability", "loss"], lines())
