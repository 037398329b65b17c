"""Train a recipe: compile, fit with Keras's callbacks, evaluate, and fill a run directory.

A run directory holds ``recipe.yaml`` (the exact settings), ``model.keras`` (the last model whose
loss was finite), ``history.csv``, ``metrics.json``, ``confusion_matrix.csv``, TensorBoard logs
in ``logs/`` and, while training, a ``backup/`` that ``resume=True`` continues from.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras

from kzoo.data.augment import augmentation
from kzoo.data.datasets import Splits, load_dataset, print_data_summary
from kzoo.data.pipeline import epoch_batches, make_pipeline
from kzoo.errors import KzooError
from kzoo.files import write_csv
from kzoo.models.registry import build, get_spec, load_model
from kzoo.recipes.recipe import Recipe
from kzoo.recipes.zoo import load_recipe
from kzoo.training.callbacks import FreezeAfter, KeepGoodEpoch, Lookahead
from kzoo.training.checkpoints import EpochCheckpoints
from kzoo.training.finetune import fine_tune
from kzoo.training.flops import steps_per_execution_for, training_flops
from kzoo.training.losses import make_loss
from kzoo.training.lr_finder import RULE, STEPS, LRFind, sweep, write_sweep
from kzoo.training.optimizers import class_weights, constant_rate, make_optimizer
from kzoo.training.run import (
    Run,
    TrainResult,
    latest_unfinished_run,
    read_history,
)

# --- the pieces -------------------------------------------------------------------------------


def model_input_shape(recipe: Recipe) -> tuple[int, ...] | None:
    shape = recipe.model_options.get("input_shape", get_spec(recipe.model).input_shape)
    return tuple(shape) if shape is not None else None


def build_for(recipe: Recipe, splits: Splits) -> keras.Model:
    """Build the recipe's model with as many classes as the data has."""
    kwargs = dict(recipe.model_options)
    if "num_classes" in get_spec(recipe.model).options:
        kwargs.setdefault("num_classes", len(splits.class_names))
    model = build(recipe.model, **kwargs)
    if tuple(model.input_shape[1:]) != splits.input_shape:
        raise KzooError(
            f"recipe {recipe.name!r}: model {recipe.model!r} takes input of shape "
            f"{tuple(model.input_shape[1:])} but dataset {recipe.dataset!r} gives "
            f"{splits.input_shape}; set model_options.input_shape to match the data"
        )
    return model


def with_validation_in_train(splits: Splits, dataset: str = "") -> Splits:
    """The splits with the validation examples added to the training ones. Refused where the
    dataset has no test split: nothing would be left to report a test figure on."""
    if not splits.has_test:
        raise KzooError(
            f"dataset {dataset or 'of this run'!r} has no test split (no test/ folder), so "
            "training on train+validation would leave no held-out images: the test figure "
            "would be measured on training images. Add a test/ folder, or train without "
            "--retrain-best"
        )
    examples = dict(splits.examples)
    examples["train"] = examples["train"].concatenate(examples.pop("validation"))
    return dataclasses.replace(splits, examples=examples)


def load_splits(recipe: Recipe, data_dir: str | os.PathLike | None = None,
                progress: bool = True) -> Splits:
    splits = load_dataset(
        recipe.dataset, data_dir=data_dir, validation_split=recipe.validation_split,
        seed=recipe.seed, input_shape=model_input_shape(recipe), progress=progress,
    )
    if recipe.batch_size > splits.sizes["train"]:
        raise KzooError(
            f"batch_size={recipe.batch_size} is larger than the {splits.sizes['train']} training "
            f"examples of {recipe.dataset!r}; pick a batch size <= {splits.sizes['train']}"
        )
    return splits


def _trim_history(history_csv: Path, epochs_done: int) -> None:
    """Drop history rows of epochs the resumed run will train again."""
    if not history_csv.is_file():
        return
    with history_csv.open() as handle:
        rows = list(csv.reader(handle))
    kept = [row for row in rows[1:] if row and int(row[0]) < epochs_done]
    write_csv(history_csv, rows[0] if rows else [], kept)


# --- train ----------------------------------------------------------------------------------------


def train(
    recipe: str | os.PathLike | Recipe,
    *,
    learning_rate: float | str | None = None,
    data_dir: str | os.PathLike | None = None,
    run_dir: str | os.PathLike | None = None,
    resume: bool = False,
    train_on_validation: bool = False,
    distribution: Mapping[str, Any] | None = None,
    verbose: str | int = "auto",
    **overrides: Any,
) -> TrainResult:
    """Train a recipe (a name from ``zoo_configs/``, a YAML path, or a :class:`Recipe`).

    ``overrides`` set any recipe field (``epochs``, ``batch_size``, ``dropout``, ``seed``,
    ``precision``, ``tta``, ``steps_per_execution``, ...; ``None`` leaves a value).
    ``learning_rate="auto"`` runs the learning-rate finder (:mod:`kzoo.training.lr_finder`)
    first, on a copy of the model, and trains at its suggestion; the run is then the run of
    that rate. ``resume`` continues ``run_dir`` (default: the recipe's latest unfinished run)
    from its last finished epoch, to the result an uninterrupted run gives.
    ``train_on_validation`` trains on the training and validation splits together, with
    nothing held out but the test split: the final fit of settings already chosen (``kzoo tune
    --retrain-best``). ``distribution`` (``coordinator`` ``HOST:PORT``, ``num_processes``,
    ``process_id``, ``devices``) trains one model across processes, machines or local devices;
    unset, it is read from ``KERAS_DISTRIBUTION_*`` (:mod:`kzoo.training.distributed`).

    >>> model, history, metrics, run_dir = kzoo.train("lenet5_mnist", epochs=1)
    """
    find_rate = learning_rate == "auto"
    recipe = load_recipe(recipe).with_overrides(
        learning_rate=None if find_rate else learning_rate, **overrides)
    if recipe.finetune is not None:  # a transfer-learning recipe: two phases, see finetune.py
        if resume:
            raise KzooError(f"recipe {recipe.name!r} fine-tunes, and fine-tuning runs cannot be "
                            "resumed; start a new run")
        return fine_tune(recipe=recipe, data_dir=data_dir, run_dir=run_dir, verbose=verbose,
                         learning_rate="auto" if find_rate else None, distribution=distribution)
    if find_rate and resume:  # the rate the run found when it started
        started = Path(run_dir) if run_dir else latest_unfinished_run(recipe.name)
        if started is not None and (started / "recipe.yaml").is_file():
            recipe = recipe.with_overrides(
                learning_rate=load_recipe(started / "recipe.yaml").optimizer.learning_rate)
        find_rate = False
    with Run(recipe, "train", run_dir=run_dir, resume=resume, data_dir=data_dir,
             distribution=distribution) as run:
        return run_training(run, verbose, train_on_validation=train_on_validation,
                            find_rate=find_rate)


def run_training(run: Run, verbose: str | int = "auto", *, train_on_validation: bool = False,
                 find_rate: bool = False) -> TrainResult:
    """The pieces of training a recipe, inside ``run``: load the data, the learning-rate sweep
    (with ``find_rate``), build, compile, fit (resumable), the final evaluation."""
    recipe, distributed, run_dir, chief = run.recipe, run.distributed, run.dir, run.chief
    distributed.check_same("their settings", json.dumps(recipe.to_dict(), sort_keys=True,
                                                        default=str),
                           "Start every process with the same recipe and the same flags")
    splits = load_splits(recipe, run.data_dir, progress=chief)
    if train_on_validation:
        splits = with_validation_in_train(splits, recipe.dataset)
    if chief:
        print_data_summary(splits)
    found = None
    if find_rate:
        found = learning_rate_sweep(recipe, splits)
        recipe = recipe.with_overrides(learning_rate=found.suggestion)
        print(f"kzoo: learning-rate finder suggests {found.suggestion:.3g} ({RULE}); "
              "training at that rate")
        run.seed()  # the run starts as a run given this rate does
    model = build_for(recipe, splits)
    run.create(splits.class_names, recipe)  # only now: bad input leaves no half-made directory
    if found is not None and chief:
        write_sweep(found, run_dir, f"{recipe.model} on {recipe.dataset}")
    train_examples = splits.examples["train"]
    validation_data = None if train_on_validation else distributed.shard(make_pipeline(
        splits.examples["validation"], recipe.batch_size))
    steps_per_epoch = math.ceil(splits.sizes["train"] / recipe.batch_size)
    adapt_to_data(model, train_examples, recipe.seed)
    steps_per_execution = distributed.steps_per_execution(steps_per_execution_for(
        recipe.steps_per_execution, model, recipe.batch_size, steps_per_epoch))
    lookahead = (Lookahead(steps_per_epoch * recipe.epochs, every=recipe.lookahead)
                 if recipe.lookahead else None)
    checkpoints = EpochCheckpoints(run_dir / "backup",  # Lookahead's average resumes too
                                   states={"lookahead": lookahead} if lookahead else None)
    with distributed.scope():
        model = distributed.replicate(model, lambda: build_for(recipe, splits))
        model.compile(
            optimizer=make_optimizer(recipe.optimizer, steps_per_epoch, recipe.epochs),
            loss=make_loss(recipe.loss, recipe.label_smoothing),
            metrics=["accuracy"],
            steps_per_execution=steps_per_execution,
        )
        done = checkpoints.restore(model) if run.resume else 0
    if run.resume and chief:
        print(f"kzoo: resuming {run_dir} after epoch {done} of {recipe.epochs}")
    history_csv = run_dir / "history.csv"
    if chief:
        _trim_history(history_csv, done)
    # Every epoch's order and augmentation are a function of (seed, epoch): a resumed run
    # trains on exactly the batches an uninterrupted one would.
    train_data = distributed.shard(epoch_batches(
        train_examples, recipe.batch_size, recipe.seed,
        augmentation(recipe.augmentation, seed=recipe.seed), first_epoch=done,
        epochs=recipe.epochs))
    keep = KeepGoodEpoch("last", save=lambda good: run.save_model(good, splits.class_names))
    writers = [  # process 0 alone writes the run directory
        keras.callbacks.CSVLogger(str(history_csv), append=True),
        checkpoints,  # after the history row: a kill between the two retrains that epoch
        keep,
        keras.callbacks.TensorBoard(str(run_dir / "logs"), profile_batch=0),
    ]
    callbacks = [
        *([FreezeAfter(recipe.freeze_after)] if recipe.freeze_after else []),
        *([lookahead] if lookahead else []),
        keras.callbacks.TerminateOnNaN(),
        *(writers if chief else []),
    ]
    print(f"kzoo: training {recipe.model} on {recipe.dataset} ({splits.sizes}) in "
          f"{run.precision}, {steps_per_execution} step(s) per execution, on "
          f"{distributed.describe()}"
          + (f" (process {distributed.cluster.process_id})" if not chief else "")
          + f"; run dir {run_dir}")
    started = time.perf_counter()
    together = distributed.stopping_together(
        f"Restart every process with --resume --run-dir {run_dir} to continue from the last epoch")
    try:
        with together, distributed.scope():
            model.fit(train_data, validation_data=validation_data, epochs=recipe.epochs,
                      initial_epoch=done, steps_per_epoch=steps_per_epoch,
                      callbacks=callbacks, verbose=verbose if chief else 0, shuffle=False,
                      class_weight=class_weights(recipe, train_examples.labels,
                                                 len(splits.class_names)))
    except KeyboardInterrupt:
        print(f"\nkzoo: interrupted; the last finished epoch is kept. Resume with "
              f"`kzoo train {recipe.name} --resume --run-dir {run_dir}` (same flags as before)")
        raise
    fit_s = time.perf_counter() - started
    if not chief:
        return run.worker_result(model)

    status = "completed"
    if keep.nan_epoch is not None:
        status = "stopped_nan"
        saved = run_dir / "model.keras"
        print(f"kzoo: the loss became NaN in epoch {keep.nan_epoch + 1}; training stopped. "
              f"Try a lower learning rate (was {recipe.optimizer.learning_rate}).")
        if not saved.is_file():
            raise KzooError(
                f"the loss became NaN in the first epoch of {recipe.name!r}; no good model to keep. "
                f"Lower the learning rate (was {recipe.optimizer.learning_rate}) and start a new run"
            )
        print(f"kzoo: kept the last good model, from epoch {keep.nan_epoch}: {saved}")
        model = load_model(str(saved))
    else:
        if recipe.lookahead:  # Lookahead set the weights to their average after the last epoch
            run.save_model(model, splits.class_names)
        model = run.model_as_saved(model)

    history = read_history(history_csv)
    metrics, _ = run.evaluate(model, splits)
    metrics.update(steps_per_execution=steps_per_execution,
                   training_flops=training_flops(model, splits.sizes["train"]) * recipe.epochs,
                   epochs_run=len(history.get("epoch", [])),
                   **{f"final_{key}": values[-1] for key, values in history.items()
                      if key != "epoch"})
    if found is not None:
        metrics["learning_rate_finder"] = found.summary()
    result = run.finish(model, history, metrics, splits=splits, timings_s={"fit_s": fit_s},
                        status=status)
    checkpoints.remove()  # finished: nothing left to resume
    figure, key = ("test", "test_accuracy") if splits.has_test else (
        "validation (no test split)", "val_accuracy")
    print(f"kzoo: {figure} accuracy {result.metrics[key]:.4f}"
          + (f" (expected {recipe.expected_accuracy})" if recipe.expected_accuracy else "")
          + f"; results in {run_dir}")
    return result


def learning_rate_sweep(recipe: Recipe, splits: Splits, steps: int = STEPS) -> LRFind:
    """The learning-rate finder's sweep (:func:`kzoo.training.lr_finder.sweep`) on a model of its own,
    built, adapted and fed as the run's would be, with the recipe's optimizer at a constant
    rate."""
    model = build_for(recipe, splits)
    train_examples = splits.examples["train"]
    adapt_to_data(model, train_examples, recipe.seed)
    model.compile(optimizer=make_optimizer(constant_rate(recipe.optimizer), 1, 1),
                  loss=make_loss(recipe.loss, recipe.label_smoothing))
    epochs = math.ceil(steps * recipe.batch_size / max(len(train_examples), 1)) + 1
    batches = epoch_batches(train_examples, recipe.batch_size, recipe.seed,
                            augmentation(recipe.augmentation, seed=recipe.seed), epochs=epochs)
    return sweep(model, batches, steps=steps)


def adapt_to_data(model: keras.Model, examples, seed: int, count: int = 5000) -> None:
    """Fit the layers that learn from the data before training (those with Keras's ``adapt``:
    ``Normalization``, :class:`kzoo.models.layers.PatchWhitening`) to ``count`` training
    images drawn with ``seed``, each seeing them as it will in the model."""
    adaptable = [layer for layer in model.layers if callable(getattr(layer, "adapt", None))]
    if not adaptable:
        return
    import numpy as np

    chosen = np.random.default_rng(seed).permutation(len(examples))[:count]
    images = examples.subset(np.sort(chosen)).read_all().astype("float32")
    for layer in adaptable:
        seen = keras.Model(model.inputs, layer.input).predict(images, batch_size=500, verbose=0)
        layer.adapt(np.asarray(seen, "float32"))
