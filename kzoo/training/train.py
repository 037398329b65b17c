"""Train a recipe: compile, fit with Keras's callbacks, evaluate, and fill a run directory.

A run directory holds ``recipe.yaml`` (the exact settings), ``model.keras`` (the last model whose
loss was finite), ``history.csv``, ``metrics.json``, ``confusion_matrix.csv``, TensorBoard logs
in ``logs/`` and, while training, a ``backup/`` that ``resume=True`` continues from.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import time
from pathlib import Path
from typing import Any

import keras

from kzoo.analysis.evaluation import confusion_matrix, format_confusion_matrix
from kzoo.analysis.tta import predict_with_tta, scores
from kzoo.data.augment import augmentation
from kzoo.data.datasets import Splits, load_dataset, print_data_summary
from kzoo.data.pipeline import epoch_batches, make_pipeline
from kzoo.errors import KzooError
from kzoo.files import write_csv, write_json
from kzoo.models.registry import build, get_spec, load_model
from kzoo.models.saving import save_model
from kzoo.recipes.recipe import Recipe
from kzoo.recipes.zoo import load_recipe
from kzoo.training.callbacks import FreezeAfter, Lookahead
from kzoo.training.checkpoints import EpochCheckpoints
from kzoo.training.distributed import Cluster, Distributed, outside_distribution, start
from kzoo.training.finetune import fine_tune
from kzoo.training.flops import steps_per_execution_for, training_flops
from kzoo.training.losses import make_loss
from kzoo.training.lr_find import RULE, STEPS, LRFind, sweep, write_sweep
from kzoo.training.optimizers import class_weights, constant_rate, make_optimizer
from kzoo.training.precision import precision_policy
from kzoo.training.runs import (
    RUNS_ROOT,
    TrainResult,
    choose_run_dir,
    latest_unfinished_run,
    require_shared_run_dir,
    run_metrics,
    seed_everything,
    start_run_dir,
    worker_result,
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


class KeepLastGoodModel(keras.callbacks.Callback):
    """Save the model (for inference, with its class names) after every epoch whose loss is
    finite."""

    def __init__(self, path: Path, class_names):
        super().__init__()
        self.path, self.class_names = path, class_names
        self.nan_epoch: int | None = None

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or not math.isfinite(loss):
            self.nan_epoch = epoch
            return
        with outside_distribution():  # one process saves alone
            save_model(self.model, self.path, self.class_names)


# --- train ----------------------------------------------------------------------------------------


def train(
    recipe: str | os.PathLike | Recipe,
    *,
    epochs: int | None = None,
    batch_size: int | None = None,
    learning_rate: float | str | None = None,
    dropout: float | None = None,
    class_weight: str | None = None,
    seed: int | None = None,
    precision: str | None = None,
    tta: str | None = None,
    steps_per_execution: int | str | None = None,
    data_dir: str | os.PathLike | None = None,
    run_dir: str | os.PathLike | None = None,
    resume: bool = False,
    verbose: str | int = "auto",
    train_on_validation: bool = False,
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    devices: str | int | None = None,
) -> TrainResult:
    """Train a recipe (a name from ``zoo_configs/``, a YAML path, or a :class:`Recipe`).

    ``train_on_validation`` trains on the training and validation splits together, with nothing
    held out but the test split: the final fit of settings already chosen (``kzoo tune
    --retrain-best``). ``precision`` (:mod:`kzoo.training.precision`), ``tta`` (test-time augmentation
    of the final evaluation, :mod:`kzoo.analysis.tta`) and ``steps_per_execution`` (an integer, or
    ``"auto"``: :func:`kzoo.training.flops.auto_steps_per_execution`) override the recipe's.

    ``learning_rate="auto"`` runs the learning-rate finder (:mod:`kzoo.training.lr_find`) first, on a
    copy of the model, and trains at its suggestion; the run is then the run of that rate.

    ``coordinator`` (``HOST:PORT``), ``num_processes`` and ``process_id`` train one model
    across processes or machines, and ``devices`` (``"all"`` or a count) over several local
    devices; unset, they are read from ``KERAS_DISTRIBUTION_*`` (:mod:`kzoo.training.distributed`).

    >>> model, history, metrics, run_dir = kzoo.train("lenet5_mnist", epochs=1)
    """
    find_rate = learning_rate == "auto"
    recipe = load_recipe(recipe).with_overrides(
        epochs=epochs, batch_size=batch_size, learning_rate=None if find_rate else learning_rate,
        dropout=dropout, class_weight=class_weight, seed=seed, precision=precision, tta=tta,
        steps_per_execution=steps_per_execution,
    )
    if recipe.finetune is not None:  # a transfer-learning recipe: two phases, see finetune.py
        if resume:
            raise KzooError(f"recipe {recipe.name!r} fine-tunes, and fine-tuning runs cannot be "
                            "resumed; start a new run")
        return fine_tune(recipe=recipe, data_dir=data_dir, run_dir=run_dir, verbose=verbose,
                         learning_rate="auto" if find_rate else None,
                         coordinator=coordinator, num_processes=num_processes,
                         process_id=process_id, devices=devices)
    if find_rate and resume:  # the rate the run found when it started
        started = Path(run_dir) if run_dir else latest_unfinished_run(recipe.name)
        if started is not None and (started / "recipe.yaml").is_file():
            recipe = recipe.with_overrides(
                learning_rate=load_recipe(started / "recipe.yaml").optimizer.learning_rate)
        find_rate = False
    cluster = Cluster.from_settings(coordinator, num_processes, process_id, devices)
    require_shared_run_dir(run_dir, cluster.num_processes)  # before waiting for the others
    distributed = start(cluster)
    run_dir = choose_run_dir(recipe, run_dir, resume, data_dir, cluster.process_id,
                             cluster.num_processes)
    with precision_policy(recipe.precision) as policy:
        return _train(recipe, policy, distributed, data_dir=data_dir, run_dir=run_dir,
                      resume=resume, verbose=verbose, train_on_validation=train_on_validation,
                      find_rate=find_rate)


def _train(recipe: Recipe, precision: str, distributed: Distributed, *, data_dir, run_dir: Path,
           resume: bool, verbose, train_on_validation: bool, find_rate: bool = False,
           ) -> TrainResult:
    seed_everything(recipe.seed)
    splits = load_splits(recipe, data_dir, progress=distributed.is_chief)
    if train_on_validation:
        splits = with_validation_in_train(splits, recipe.dataset)
    chief = distributed.is_chief
    if chief:
        print_data_summary(splits)
    found = None
    if find_rate:
        found = learning_rate_sweep(recipe, splits)
        recipe = recipe.with_overrides(learning_rate=found.suggestion)
        print(f"kzoo: learning-rate finder suggests {found.suggestion:.3g} ({RULE}); "
              "training at that rate")
        seed_everything(recipe.seed)  # the run starts as a run given this rate does
    model = build_for(recipe, splits)
    if chief and not resume:  # only now: bad input above leaves no half-made run directory
        start_run_dir(recipe, run_dir, "train", data_dir, splits.class_names)
        if found is not None:
            write_sweep(found, run_dir, f"{recipe.model} on {recipe.dataset}")
    train_examples = splits.examples["train"]
    validation_data = None if train_on_validation else distributed.shard(make_pipeline(
        splits.examples["validation"], recipe.batch_size))
    steps_per_epoch = math.ceil(splits.sizes["train"] / recipe.batch_size)
    adapt_to_data(model, train_examples, recipe.seed)
    steps_per_execution = distributed.steps_per_execution(steps_per_execution_for(
        recipe.steps_per_execution, model, recipe.batch_size, steps_per_epoch))
    checkpoints = EpochCheckpoints(run_dir / "backup")
    with distributed.scope():
        model = distributed.replicate(model, lambda: build_for(recipe, splits))
        model.compile(
            optimizer=make_optimizer(recipe.optimizer, steps_per_epoch, recipe.epochs),
            loss=make_loss(recipe.loss, recipe.label_smoothing),
            metrics=["accuracy"],
            steps_per_execution=steps_per_execution,
        )
        done = checkpoints.restore(model) if resume else 0
    if resume and chief:
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
    keep_good = KeepLastGoodModel(run_dir / "model.keras", splits.class_names)
    writers = [  # process 0 alone writes the run directory
        keras.callbacks.CSVLogger(str(history_csv), append=True),
        checkpoints,  # after the history row: a kill between the two retrains that epoch
        keep_good,
        keras.callbacks.TensorBoard(str(run_dir / "logs"), profile_batch=0),
    ]
    callbacks = [
        *([FreezeAfter(recipe.freeze_after)] if recipe.freeze_after else []),
        *([Lookahead(steps_per_epoch * recipe.epochs, every=recipe.lookahead)]
          if recipe.lookahead else []),
        keras.callbacks.TerminateOnNaN(),
        *(writers if chief else []),
    ]
    print(f"kzoo: training {recipe.model} on {recipe.dataset} ({splits.sizes}) in {precision}, "
          f"{steps_per_execution} step(s) per execution, on {distributed.describe()}"
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
    wall_time = time.perf_counter() - started
    if not chief:
        return worker_result("train", model, run_dir, distributed.cluster.process_id)

    status = "completed"
    if keep_good.nan_epoch is not None:
        status = "stopped_nan"
        saved = run_dir / "model.keras"
        print(f"kzoo: the loss became NaN in epoch {keep_good.nan_epoch + 1}; training stopped. "
              f"Try a lower learning rate (was {recipe.optimizer.learning_rate}).")
        if not saved.is_file():
            raise KzooError(
                f"the loss became NaN in the first epoch of {recipe.name!r}; no good model to keep. "
                f"Lower the learning rate (was {recipe.optimizer.learning_rate}) and start a new run"
            )
        print(f"kzoo: kept the last good model, from epoch {keep_good.nan_epoch}: {saved}")
        model = load_model(str(saved))
    elif recipe.lookahead:  # Lookahead set the weights to their average after the last epoch
        with outside_distribution():
            save_model(model, run_dir / "model.keras", splits.class_names)
    if distributed.replicas > 1 and keep_good.nan_epoch is None:
        model = load_model(str(run_dir / "model.keras"))  # evaluated on one device, as saved

    history = _read_history(history_csv)
    metrics = run_metrics(
        "train", recipe, class_names=splits.class_names, test_split=splits.test_split,
        sizes=splits.sizes, wall_time_s=wall_time, timings_s={"fit_s": wall_time},
        data_dir=data_dir, status=status,
    )
    metrics.update(steps_per_execution=steps_per_execution,
                   distribution=distributed.summary(),
                   training_flops=training_flops(model, splits.sizes["train"]) * recipe.epochs)
    if found is not None:
        metrics["learning_rate_finder"] = found.summary()
    metrics.update(evaluate_run(model, recipe, splits, run_dir))
    metrics.update(
        epochs_run=len(history.get("epoch", [])),
        **{f"final_{key}": values[-1] for key, values in history.items() if key != "epoch"},
    )
    write_json(run_dir / "metrics.json", metrics)
    checkpoints.remove()  # finished: nothing left to resume
    figure, key = ("test", "test_accuracy") if splits.has_test else (
        "validation (no test split)", "val_accuracy")
    print(f"kzoo: {figure} accuracy {metrics[key]:.4f}"
          + (f" (expected {recipe.expected_accuracy})" if recipe.expected_accuracy else "")
          + f"; results in {run_dir}")
    return TrainResult(model, history, metrics, run_dir)


def _read_history(history_csv: Path) -> dict[str, list[float]]:
    if not history_csv.is_file():
        return {}
    with history_csv.open() as handle:
        rows = list(csv.DictReader(handle))
    # CSVLogger writes NA in the val_ columns of a fit without validation data.
    return {key: [float(row[key]) for row in rows] for key in (rows[0] if rows else {})
            if not any(row[key] == "NA" for row in rows)}


def evaluate_run(model: keras.Model, recipe: Recipe, splits: Splits, run_dir: Path) -> dict[str, Any]:
    """Test loss and accuracy (on the validation split where there is no test split: then
    ``test_split`` says so), with the confusion matrix printed and saved as CSV."""
    test_data = make_pipeline(splits.examples[splits.test_split], recipe.batch_size)
    prefix = "test" if splits.has_test else "val"  # a validation figure is never called a test one
    probabilities, truth = predict_with_tta(model, test_data, recipe.tta)
    loss, accuracy = scores(probabilities, truth)
    predicted = probabilities.argmax(1)
    extra = {}
    if recipe.tta != "none":
        extra[f"{prefix}_accuracy_without_tta"] = scores(*predict_with_tta(model, test_data))[1]
    matrix = confusion_matrix(truth, predicted, max(len(splits.class_names), 2))
    print(format_confusion_matrix(matrix, splits.class_names))
    write_csv(run_dir / "confusion_matrix.csv", ["true\\predicted", *splits.class_names],
              ([name, *row.tolist()] for name, row in zip(splits.class_names, matrix)))
    return {
        f"{prefix}_loss": float(loss),
        f"{prefix}_accuracy": float(accuracy),
        f"{prefix}_examples": len(truth),
        "tta": recipe.tta,
        **extra,
        "confusion_matrix": matrix.tolist(),
    }


def lr_find(
    target: str | os.PathLike | Recipe,
    *,
    steps: int = STEPS,
    batch_size: int | None = None,
    seed: int | None = None,
    precision: str | None = None,
    data_dir: str | os.PathLike | None = None,
    run_dir: str | os.PathLike | None = None,
    verbose: str | int = "auto",
    **folder_options: Any,
) -> dict[str, Any]:
    """Run the learning-rate finder (:mod:`kzoo.training.lr_find`) on a recipe (a name, a YAML path or
    a :class:`Recipe`), or on an image folder: then on its fine-tuning phase, after the head
    phase, with ``folder_options`` as :func:`kzoo.fine_tune` takes them. Writes ``lr_find.png``
    and ``lr_find.json`` into ``run_dir`` (default ``runs/lr-find-NAME-TIME``) and returns the
    sweep's summary: ``suggestion``, ``rule``, ``minimum``, ``steepest``, ``run_dir``.

    >>> kzoo.lr_find("lenet5_mnist")["suggestion"]
    """
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder = isinstance(target, (str, os.PathLike)) and Path(target).expanduser().is_dir()
    recipe = None if folder else load_recipe(target).with_overrides(
        batch_size=batch_size, seed=seed, precision=precision)
    if folder or recipe.finetune is not None:
        name = Path(target).name if folder else recipe.name
        result = fine_tune(target if folder else None, recipe=recipe, sweep_only=True,
                           sweep_steps=steps, batch_size=batch_size, seed=seed, precision=precision,
                           data_dir=data_dir, verbose=verbose,
                           run_dir=run_dir or RUNS_ROOT / f"lr-find-{name}-{stamp}",
                           **folder_options)
        summary = result.metrics
    else:
        run_dir = choose_run_dir(recipe, run_dir or RUNS_ROOT / f"lr-find-{recipe.name}-{stamp}",
                                 resume=False)
        with precision_policy(recipe.precision):
            seed_everything(recipe.seed)
            splits = load_splits(recipe, data_dir)
            found = learning_rate_sweep(recipe, splits, steps)
        start_run_dir(recipe, run_dir, "lr_find", data_dir, splits.class_names)
        write_sweep(found, run_dir, f"{recipe.model} on {recipe.dataset}")
        summary, result = found.to_dict(), None
    return {key: summary[key] for key in ("suggestion", "rule", "minimum", "steepest",
                                          "diverged", "steps")} | {
        "run_dir": result.run_dir if result else run_dir}


def learning_rate_sweep(recipe: Recipe, splits: Splits, steps: int = STEPS) -> LRFind:
    """The learning-rate finder's sweep (:func:`kzoo.training.lr_find.sweep`) on a model of its own,
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
