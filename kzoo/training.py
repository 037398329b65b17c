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
from pathlib import Path
from typing import Any, NamedTuple

import keras
import numpy as np
import tensorflow as tf

from kzoo.augment import augmentation
from kzoo.datasets import Splits, load_dataset
from kzoo.errors import KzooError
from kzoo.evaluation import confusion_matrix, format_confusion_matrix, predict_labels
from kzoo.pipeline import make_pipeline
from kzoo.recipes import Optimizer, Recipe, load_recipe, save_recipe
from kzoo.registry import build, get_spec, load_model


class TrainResult(NamedTuple):
    model: keras.Model
    history: dict[str, list[float]]
    metrics: dict[str, Any]
    run_dir: Path


# --- the pieces -------------------------------------------------------------------------------


def make_optimizer(config: Optimizer, steps_per_epoch: int, epochs: int) -> keras.optimizers.Optimizer:
    """The recipe's optimizer, its learning rate annealed by the recipe's schedule."""
    rate: Any = config.learning_rate
    options = config.schedule_options
    schedules = keras.optimizers.schedules
    if config.schedule == "cosine":
        rate = schedules.CosineDecay(rate, decay_steps=max(1, steps_per_epoch * epochs))
    elif config.schedule == "exponential":
        rate = schedules.ExponentialDecay(
            rate, decay_steps=max(1, round(steps_per_epoch * options["decay_epochs"])),
            decay_rate=options["decay_rate"],
        )
    elif config.schedule == "step":
        rate = schedules.ExponentialDecay(
            rate, decay_steps=steps_per_epoch * options["every_epochs"],
            decay_rate=options["factor"], staircase=True,
        )
    if config.name == "sgd":
        return keras.optimizers.SGD(rate, momentum=config.momentum)
    if config.name == "rmsprop":
        return keras.optimizers.RMSprop(rate, momentum=config.momentum)
    return keras.optimizers.Adam(rate)


def class_weights(recipe: Recipe, labels: np.ndarray, num_classes: int) -> dict[int, float] | None:
    """Keras ``class_weight`` for the recipe's ``class_weight`` setting: ``balanced`` weighs
    each class by ``examples / (classes * examples of the class)``; ``None`` otherwise."""
    if recipe.class_weight != "balanced":
        return None
    counts = np.bincount(np.asarray(labels, dtype=np.int64).ravel(), minlength=num_classes)
    total, present = counts.sum(), max(int((counts > 0).sum()), 1)
    return {index: float(total / (present * count)) if count else 0.0
            for index, count in enumerate(counts)}


def print_data_summary(splits: Splits, verbose: bool = True) -> None:
    """The short audit of an image folder, and what its scan decoded."""
    if splits.scan is None:
        return
    from kzoo.folders import audit, format_audit

    stats = splits.scan.stats
    rate = f" ({stats.decode_rate:.0f} images/s)" if stats.decode_rate else ""
    print(f"kzoo: scanned {stats.files} files in {stats.seconds:.1f}s: {stats.decoded} decoded"
          f"{rate}, {stats.reused} from the cache, {stats.skipped} skipped (cache {stats.cache})")
    if verbose:
        print(format_audit(audit(splits.scan)))


def model_input_shape(recipe: Recipe) -> tuple[int, ...] | None:
    shape = recipe.model_kwargs.get("input_shape", get_spec(recipe.model).input_shape)
    return tuple(shape) if shape is not None else None


def build_for(recipe: Recipe, splits: Splits) -> keras.Model:
    """Build the recipe's model with as many classes as the data has."""
    kwargs = dict(recipe.model_kwargs)
    if "num_classes" in get_spec(recipe.model).options:
        kwargs.setdefault("num_classes", len(splits.class_names))
    model = build(recipe.model, **kwargs)
    if tuple(model.input_shape[1:]) != splits.input_shape:
        raise KzooError(
            f"recipe {recipe.name!r}: model {recipe.model!r} takes input of shape "
            f"{tuple(model.input_shape[1:])} but dataset {recipe.dataset!r} gives "
            f"{splits.input_shape}; set model_kwargs.input_shape to match the data"
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


# --- the run directory ----------------------------------------------------------------------


def _latest_run(recipe_name: str, runs_root: Path) -> Path | None:
    runs = sorted(runs_root.glob(f"{recipe_name}-*"), key=lambda p: p.stat().st_mtime)
    return runs[-1] if runs else None


def prepare_run_dir(recipe: Recipe, run_dir: str | os.PathLike | None, resume: bool) -> Path:
    """A new run directory (created, holding ``recipe.yaml``) or the one to resume."""
    run_dir = choose_run_dir(recipe, run_dir, resume)
    if not resume:
        start_run_dir(recipe, run_dir)
    return run_dir


def start_run_dir(recipe: Recipe, run_dir: Path) -> None:
    """Create a new run directory and record the exact settings in ``recipe.yaml``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    save_recipe(recipe, run_dir / "recipe.yaml")


def choose_run_dir(recipe: Recipe, run_dir: str | os.PathLike | None, resume: bool) -> Path:
    """The run directory to use, checked but not yet created: a new one, or the one to resume.

    A finished run is never resumed and a non-empty directory never reused for a new run.
    """
    runs_root = Path("runs")
    if run_dir is None and resume:
        run_dir = _latest_run(recipe.name, runs_root)
        if run_dir is None:
            raise KzooError(
                f"nothing to resume: no run of {recipe.name!r} under {runs_root}/; "
                "pass --run-dir DIR of the interrupted run"
            )
    if run_dir is None:
        run_dir = runs_root / f"{recipe.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(run_dir)
    saved = run_dir / "recipe.yaml"
    if resume:
        if not saved.is_file():
            raise KzooError(f"cannot resume {str(run_dir)!r}: it holds no recipe.yaml of a kzoo run")
        previous = load_recipe(saved)
        if previous.to_dict() != recipe.to_dict():
            changed = sorted(
                key for key, value in recipe.to_dict().items() if previous.to_dict().get(key) != value
            )
            raise KzooError(
                f"cannot resume {str(run_dir)!r} with different settings ({', '.join(changed)}); "
                "rerun with the same recipe and flags, or start a new run"
            )
        metrics = run_dir / "metrics.json"
        if metrics.is_file() and json.loads(metrics.read_text()).get("status") == "completed":
            raise KzooError(f"run {str(run_dir)!r} already finished; nothing to resume")
        return run_dir
    if run_dir.exists() and any(run_dir.iterdir()):
        raise KzooError(
            f"run directory {str(run_dir)!r} already exists and is not empty; pass --resume to "
            "continue it, or choose another --run-dir"
        )
    return run_dir


def _write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(data, indent=2, default=float))
    os.replace(partial, path)


def _trim_history(history_csv: Path, backup_dir: Path) -> None:
    """Drop history rows of epochs the resumed run will train again."""
    metadata = backup_dir / "training_metadata.json"
    if not history_csv.is_file():
        return
    done = json.loads(metadata.read_text())["epoch"] if metadata.is_file() else 0
    with history_csv.open() as handle:
        rows = list(csv.reader(handle))
    kept = rows[:1] + [row for row in rows[1:] if row and int(row[0]) < done]
    with history_csv.open("w", newline="") as handle:
        csv.writer(handle).writerows(kept)


class KeepLastGoodModel(keras.callbacks.Callback):
    """Save the model after every epoch whose loss is finite (write, then rename)."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = path
        self.nan_epoch: int | None = None

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or not math.isfinite(loss):
            self.nan_epoch = epoch
            return
        partial = self.path.with_name(f".partial-{self.path.name}")
        self.model.save(partial)
        os.replace(partial, self.path)


# --- train ----------------------------------------------------------------------------------------


def _seed_everything(seed: int) -> None:
    keras.utils.set_random_seed(seed)  # Python, NumPy, TensorFlow and the Keras backend
    # On every backend: the tf.data pipelines (shuffle, augmentation) run TensorFlow ops even
    # when the model runs on JAX, and without this their random streams differ from run to run.
    tf.config.experimental.enable_op_determinism()


def _versions() -> dict[str, str]:
    from kzoo import __version__

    return {"kzoo": __version__, "keras": keras.__version__, "backend": keras.backend.backend(),
            "tensorflow": tf.__version__}


def train(
    recipe: str | os.PathLike | Recipe,
    *,
    epochs: int | None = None,
    batch_size: int | None = None,
    learning_rate: float | None = None,
    dropout: float | None = None,
    class_weight: str | None = None,
    seed: int | None = None,
    data_dir: str | os.PathLike | None = None,
    run_dir: str | os.PathLike | None = None,
    resume: bool = False,
    verbose: str | int = "auto",
    train_on_validation: bool = False,
) -> TrainResult:
    """Train a recipe (a name from ``zoo_configs/``, a YAML path, or a :class:`Recipe`).

    ``train_on_validation`` trains on the training and validation splits together, with nothing
    held out but the test split: the final fit of settings already chosen (``kzoo tune
    --retrain-best``).

    >>> model, history, metrics, run_dir = kzoo.train("lenet5_mnist", epochs=1)
    """
    recipe = load_recipe(recipe).with_overrides(
        epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, dropout=dropout,
        class_weight=class_weight, seed=seed,
    )
    if recipe.finetune is not None:  # a transfer-learning recipe: two phases, see finetune.py
        if resume:
            raise KzooError(f"recipe {recipe.name!r} fine-tunes, and fine-tuning runs cannot be "
                            "resumed; start a new run")
        from kzoo.finetune import fine_tune

        return fine_tune(recipe=recipe, data_dir=data_dir, run_dir=run_dir, verbose=verbose)
    run_dir = choose_run_dir(recipe, run_dir, resume)
    _seed_everything(recipe.seed)
    splits = load_splits(recipe, data_dir)
    if train_on_validation:
        splits = with_validation_in_train(splits, recipe.dataset)
    print_data_summary(splits)
    model = build_for(recipe, splits)
    if not resume:  # only now: bad input above leaves no half-made run directory behind
        start_run_dir(recipe, run_dir)
        (run_dir / "class_names.json").write_text(json.dumps(splits.class_names, indent=2))
    train_examples = splits.examples["train"]
    train_data = make_pipeline(train_examples, recipe.batch_size, shuffle_seed=recipe.seed,
                               augment=augmentation(recipe.augmentation, seed=recipe.seed))
    validation_data = None if train_on_validation else make_pipeline(
        splits.examples["validation"], recipe.batch_size)
    steps_per_epoch = math.ceil(splits.sizes["train"] / recipe.batch_size)
    model.compile(
        optimizer=make_optimizer(recipe.optimizer, steps_per_epoch, recipe.epochs),
        loss=recipe.loss,
        metrics=["accuracy"],
    )

    history_csv, backup_dir = run_dir / "history.csv", run_dir / "backup"
    _trim_history(history_csv, backup_dir)
    keep_good = KeepLastGoodModel(run_dir / "model.keras")
    callbacks = [
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.CSVLogger(str(history_csv), append=True),
        # Two checkpoints: a run killed while writing one resumes from the other.
        keras.callbacks.BackupAndRestore(str(backup_dir), double_checkpoint=True),
        keep_good,
        keras.callbacks.TensorBoard(str(run_dir / "logs"), profile_batch=0),
    ]
    print(f"kzoo: training {recipe.model} on {recipe.dataset} ({splits.sizes}); run dir {run_dir}")
    started = time.perf_counter()
    try:
        model.fit(train_data, validation_data=validation_data, epochs=recipe.epochs,
                  callbacks=callbacks, verbose=verbose, shuffle=False,
                  class_weight=class_weights(recipe, train_examples.labels,
                                             len(splits.class_names)))
    except KeyboardInterrupt:
        print(f"\nkzoo: interrupted; the last finished epoch is kept. Resume with "
              f"`kzoo train {recipe.name} --resume --run-dir {run_dir}` (same flags as before)")
        raise
    wall_time = time.perf_counter() - started

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

    metrics = evaluate_run(model, recipe, splits, run_dir)
    history = _read_history(history_csv)
    metrics.update(
        status=status,
        epochs_run=len(history.get("epoch", [])),
        wall_time_s=round(wall_time, 2),
        **{f"final_{key}": values[-1] for key, values in history.items() if key != "epoch"},
        versions=_versions(),
    )
    _write_json_atomically(run_dir / "metrics.json", metrics)
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
    if model.optimizer is None or not model.compiled:
        model.compile(loss=recipe.loss, metrics=["accuracy"])
    loss, accuracy = model.evaluate(test_data, verbose=0)
    prefix = "test" if splits.has_test else "val"  # a validation figure is never called a test one
    truth, predicted = predict_labels(model, test_data)
    matrix = confusion_matrix(truth, predicted, max(len(splits.class_names), 2))
    print(format_confusion_matrix(matrix, splits.class_names))
    with (run_dir / "confusion_matrix.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["true\\predicted", *splits.class_names])
        for name, row in zip(splits.class_names, matrix):
            writer.writerow([name, *row.tolist()])
    return {
        "recipe": recipe.name,
        "model": recipe.model,
        "dataset": recipe.dataset,
        "seed": recipe.seed,
        f"{prefix}_loss": float(loss),
        f"{prefix}_accuracy": float(accuracy),
        f"{prefix}_examples": len(truth),
        "test_split": splits.test_split,
        "sizes": splits.sizes,
        "expected_accuracy": recipe.expected_accuracy,
        "class_names": splits.class_names,
        "confusion_matrix": matrix.tolist(),
    }
