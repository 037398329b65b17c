"""Hyperparameter search with KerasTuner: :func:`tune` (the ``kzoo tune`` command).

KerasTuner does the searching: its oracles hold the search state, its tuners run the trials.
kzoo supplies what a zoo needs on top:

- :class:`RecipeHyperModel`, any recipe as a ``HyperModel``: ``build(hp)`` builds the recipe's
  model with the trial's model options (dropout...), ``fit(hp, model, ...)`` compiles it with the
  trial's learning rate and trains it at the trial's batch size (batch size belongs in ``fit``,
  as KerasTuner's maintainers recommend).
- :func:`search_space`: learning rate (log scale), batch size and dropout by default, narrowed,
  widened or extended by the recipe's ``search:`` section and by ``--search NAME=SPEC``.
- Oracles that propose the recipe's own values first, so a search never does worse than the
  recipe; that keep each trial's wall time in their saved state; that rewrite ``trials.csv``
  after every trial; and that stop with a clear message after repeated failures.
- :func:`distributed_role`: KerasTuner's own chief/worker mode, started by ``--chief HOST:PORT``
  (serves the oracle) and ``--worker HOST:PORT`` (runs trials).

A search lives in ``DIRECTORY/PROJECT`` (default ``tuning/RECIPE-ALGORITHM``): KerasTuner's
state (``oracle.json``, ``trial_*/``), ``search.json`` (the settings, checked on resume),
``trials.csv``, ``summary.txt`` and ``RECIPE_tuned.yaml``, the best trial as a ready recipe.
Running the same command again resumes the search, re-running a trial that was cut off;
``overwrite=True`` starts afresh.

>>> result = kzoo.tune("lenet5_mnist", algorithm="hyperband", epochs=9)
>>> result.best_recipe.optimizer.learning_rate
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import difflib
import io
import json
import math
import os
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import keras
import keras_tuner as kt
import tensorflow as tf

from kzoo._compat import custom_gradient_names, forget_custom_gradients
from kzoo.augment import PRESETS, augmentation
from kzoo.datasets import Splits
from kzoo.errors import KzooError
from kzoo.optimizers import make_optimizer
from kzoo.pipeline import make_pipeline
from kzoo.recipes import Recipe, SearchRange, load_recipe, parse_search_entry, save_recipe
from kzoo.registry import get_spec
from kzoo.runs import TrainResult, seed_everything
from kzoo.training import build_for, load_splits, train, with_validation_in_train

OBJECTIVE = kt.Objective("val_accuracy", direction="max")
DEFAULT_BATCH_SIZES = (16, 32, 64, 128, 256, 512, 1024, 2000)
DEFAULT_MAX_TRIALS = 10
TRIALS_TABLE = "trials.csv"
SETTINGS_FILE = "search.json"
RUNNING, COMPLETED = kt.engine.trial.TrialStatus.RUNNING, kt.engine.trial.TrialStatus.COMPLETED

# What a search may name besides the model's options, and the type of each.
_RECIPE_TUNABLES = {"learning_rate": float, "momentum": float, "batch_size": int,
                    "augmentation": str}
_NOT_TUNABLE_OPTIONS = ("num_classes", "input_shape", "weights")
_LIMITS = {  # name: (test, what it expects)
    "learning_rate": (lambda value: value > 0, "> 0"),
    "momentum": (lambda value: 0 <= value <= 1, "in [0, 1]"),
    "dropout": (lambda value: 0 <= value < 1, "in [0, 1)"),
    "batch_size": (lambda value: value >= 1, ">= 1"),
}
# Hyperband's bookkeeping values, as trials.csv names them.
_HYPERBAND_COLUMNS = {"tuner/epochs": "epochs", "tuner/initial_epoch": "initial_epoch",
                      "tuner/trial_id": "continues_trial", "tuner/bracket": "bracket",
                      "tuner/round": "round"}


# --- the search space ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Tunable:
    """One searched hyperparameter: its name, type, the recipe's value (the first trial's) and
    where to look (a complete :class:`SearchRange`)."""

    name: str
    kind: type
    recipe_value: Any
    entry: SearchRange

    def declare(self, hp: kt.HyperParameters) -> Any:
        """Register this hyperparameter in ``hp`` (once) and return its value for the trial."""
        entry, default = self.entry, self.recipe_value
        if entry.values is not None:
            if self.kind is bool and set(entry.values) == {True, False}:
                return hp.Boolean(self.name, default=default)
            return hp.Choice(self.name, list(entry.values), default=default)
        number = int if self.kind is int else float
        step = number(entry.step) if entry.step is not None else None
        return (hp.Int if self.kind is int else hp.Float)(
            self.name, number(entry.min), number(entry.max), step=step,
            sampling=entry.sampling or "linear", default=number(default),
        )

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "recipe_value": self.recipe_value, **self.entry.to_dict()}


def tunable_names(recipe: Recipe) -> dict[str, type]:
    """Every hyperparameter a search over ``recipe`` may name, with its type: the recipe's
    ``learning_rate``, ``momentum``, ``batch_size`` and ``augmentation``, and the options of its
    model (``dropout``, ``hidden_units``, ``l2``...)."""
    names = dict(_RECIPE_TUNABLES)
    for option, default in get_spec(recipe.model).options.items():
        if option not in _NOT_TUNABLE_OPTIONS and isinstance(default, (bool, int, float, str)):
            names[option] = type(default)
    return names


def recipe_value(recipe: Recipe, name: str) -> Any:
    """The value ``recipe`` gives the hyperparameter ``name``."""
    if name in ("learning_rate", "momentum"):
        return getattr(recipe.optimizer, name)
    if name in _RECIPE_TUNABLES:
        return getattr(recipe, name)
    return recipe.model_kwargs.get(name, get_spec(recipe.model).options[name])


def apply_values(recipe: Recipe, values: Mapping[str, Any]) -> Recipe:
    """``recipe`` with the hyperparameters in ``values`` set (Hyperband's ``tuner/`` values are
    left out)."""
    optimizer, model_kwargs, fields = recipe.optimizer, dict(recipe.model_kwargs), {}
    for name, value in values.items():
        if name.startswith("tuner/"):
            continue
        if name in ("learning_rate", "momentum"):
            optimizer = dataclasses.replace(optimizer, **{name: float(value)})
        elif name in _RECIPE_TUNABLES:
            fields[name] = value
        else:
            model_kwargs[name] = value
    return dataclasses.replace(recipe, optimizer=optimizer, model_kwargs=model_kwargs, **fields)


def _significant(value: float) -> float:
    return float(f"{value:.10g}")  # 0.30000000000000004 -> 0.3; any real precision is kept


def default_search(recipe: Recipe, train_size: int | None = None) -> dict[str, SearchRange]:
    """kzoo's default search around ``recipe``: the learning rate from a tenth to ten times the
    recipe's on a log scale, batch sizes from 16 to 2000 (those the training split can fill),
    and dropout from 0 to 0.6 in steps of 0.1 where the model has a dropout option."""
    rate = recipe.optimizer.learning_rate
    sizes = sorted({*DEFAULT_BATCH_SIZES, recipe.batch_size})
    fitting = tuple(size for size in sizes if not train_size or size <= train_size)
    space = {
        "learning_rate": SearchRange(min=_significant(rate / 10), max=_significant(rate * 10),
                                     sampling="log"),
        "batch_size": SearchRange(values=fitting),
    }
    if "dropout" in get_spec(recipe.model).options:
        space["dropout"] = SearchRange(min=0.0, max=max(0.6, recipe_value(recipe, "dropout")),
                                       step=0.1)
    return space


def _merge(base: SearchRange | None, override: SearchRange | None) -> SearchRange | None:
    """``override`` on top of ``base``: a range's unset fields come from a base range."""
    if override is None or base is None or override.values is not None or base.values is not None:
        return override
    fields = {}
    for key in ("min", "max", "step", "sampling"):
        value = getattr(override, key)
        fields[key] = value if value is not None else getattr(base, key)
    return SearchRange(**fields)


def search_space(
    recipe: Recipe,
    overrides: Mapping[str, SearchRange | None] | None = None,
    train_size: int | None = None,
) -> list[Tunable]:
    """The hyperparameters a search over ``recipe`` tries: :func:`default_search`, then the
    recipe's ``search:`` section, then ``overrides`` (from ``--search``), each on top of the one
    before; ``None`` entries are not searched. Checks every name, range and value, and that the
    space holds the recipe's own values (they are the first trial)."""
    names = tunable_names(recipe)
    layers = [default_search(recipe, train_size), recipe.search, dict(overrides or {})]
    for layer, origin in zip(layers[1:], ("the recipe's search section", "--search (search=)")):
        for name in layer:
            if name not in names:
                close = difflib.get_close_matches(name, list(names), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise KzooError(
                    f"unknown hyperparameter {name!r} in {origin}{hint}; a search over recipe "
                    f"{recipe.name!r} (model {recipe.model!r}) can name: {', '.join(sorted(names))}"
                )
    merged: dict[str, SearchRange | None] = {}
    for layer in layers:
        for name, entry in layer.items():
            merged[name] = _merge(merged.get(name), entry)
    return [_checked(recipe, name, names[name], entry, train_size)
            for name, entry in merged.items() if entry is not None]


def _checked(recipe: Recipe, name: str, kind: type, entry: SearchRange,
             train_size: int | None) -> Tunable:
    where = f"recipe {recipe.name!r} [search {name}]"
    if entry.values is None and (entry.min is None or entry.max is None):
        raise KzooError(f"{where}: a range needs both min and max, got {entry.to_dict()}; "
                        "e.g. {min: 0.0001, max: 0.1}")
    entry.validated(where)
    if kind in (str, bool) and entry.values is None:
        raise KzooError(f"{where}: {name} takes {kind.__name__} values, so search it with a list "
                        f"(values: [...]), not a range")
    points = list(entry.values) if entry.values is not None else [entry.min, entry.max]
    if entry.step is not None:
        points.append(entry.step)
    for value in points:
        fits = (isinstance(value, kind) and not (kind is int and isinstance(value, bool))
                or (kind is float and isinstance(value, int) and not isinstance(value, bool)))
        if not fits:
            raise KzooError(f"{where}: {value!r} is not a valid {name}; expected "
                            f"{'whole numbers' if kind is int else kind.__name__ + ' values'}")
    if kind is float:
        entry = dataclasses.replace(entry, values=tuple(map(float, entry.values))) \
            if entry.values is not None else entry
    test, expected = _LIMITS.get(name, (None, ""))
    for value in points[:-1] if entry.step is not None else points:
        if test is not None and not test(value):
            raise KzooError(f"{where}: {name}={value!r} is out of bounds; expected {expected}")
    if name == "batch_size" and train_size is not None:
        largest = max(entry.values) if entry.values is not None else entry.max
        if largest > train_size:
            raise KzooError(
                f"{where}: batch_size {largest} is larger than the {train_size} training examples "
                f"of {recipe.dataset!r}; search batch sizes <= {train_size}"
            )
    if name == "augmentation" and not set(entry.values) <= set(PRESETS):
        unknown = sorted(set(entry.values) - set(PRESETS))
        raise KzooError(f"{where}: unknown augmentation preset(s) {', '.join(unknown)}; expected "
                        f"some of {', '.join(PRESETS)}")
    if name == "momentum" and recipe.optimizer.name == "adam":
        raise KzooError(f"{where}: the recipe's optimizer is adam, which takes no momentum; search "
                        "momentum with sgd or rmsprop, or leave it out")
    current = recipe_value(recipe, name)
    inside = (current in entry.values if entry.values is not None
              else entry.min <= current <= entry.max)
    if not inside:
        shown = f"values {list(entry.values)}" if entry.values is not None else \
            f"range {entry.min}..{entry.max}"
        raise KzooError(
            f"{where}: the recipe's own {name} ({current!r}) is outside the {shown}; the recipe's "
            f"values are the first trial, so the space must hold them: widen the range or add "
            f"{current!r} to the values (or change the recipe's {name})"
        )
    return Tunable(name, kind, kind(current) if kind is float else current, entry)


# --- the hypermodel ---------------------------------------------------------------------------


class RecipeHyperModel(kt.HyperModel):
    """A recipe as a KerasTuner ``HyperModel``, its hyperparameters from ``space``.

    ``build(hp)`` builds the recipe's model with the trial's model options; ``fit(hp, model,
    train, validation, epochs=...)`` compiles it with the trial's optimizer settings and trains
    it on the unbatched ``train`` dataset at the trial's batch size. A trial whose loss becomes
    NaN, or that runs out of memory, fails (``FailedTrialError``) and the search goes on.
    """

    def __init__(self, recipe: Recipe, space: Sequence[Tunable], splits: Splits):
        super().__init__(name=recipe.name)
        self.recipe, self.space, self.splits = recipe, list(space), splits

    def declare_hyperparameters(self, hp: kt.HyperParameters) -> None:
        for tunable in self.space:
            tunable.declare(hp)

    def recipe_for(self, hp: kt.HyperParameters) -> Recipe:
        """The recipe with the trial's values."""
        return apply_values(self.recipe, {t.name: t.declare(hp) for t in self.space})

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        recipe = self.recipe_for(hp)
        seed_everything(recipe.seed)  # every trial starts from the same initial weights
        return build_for(recipe, self.splits)

    def fit(self, hp, model, train, validation, *, epochs, initial_epoch=0, callbacks=None,
            verbose="auto", **kwargs):
        recipe = self.recipe_for(hp)
        steps = math.ceil(len(train) / recipe.batch_size)
        model.compile(optimizer=make_optimizer(recipe.optimizer, steps, epochs),
                      loss=recipe.loss, metrics=["accuracy"])
        model.optimizer.iterations.assign(initial_epoch * steps)  # Hyperband continues a schedule
        train_data = make_pipeline(train, recipe.batch_size, shuffle_seed=recipe.seed,
                                   augment=augmentation(recipe.augmentation, seed=recipe.seed))
        try:
            history = model.fit(
                train_data, validation_data=make_pipeline(validation, recipe.batch_size),
                epochs=epochs, initial_epoch=initial_epoch, shuffle=False, verbose=verbose,
                callbacks=[keras.callbacks.TerminateOnNaN(), *(callbacks or [])], **kwargs,
            )
        except Exception as error:
            if not _out_of_memory(error):
                raise
            reason = (getattr(error, "message", None) or str(error)).strip().splitlines()
            raise kt.errors.FailedTrialError(
                f"out of memory with batch_size={recipe.batch_size} "
                f"({reason[0] if reason else type(error).__name__}); search smaller batch sizes"
            ) from error
        return self._results(history.history, initial_epoch, hp)

    def _results(self, logs: dict[str, list[float]], initial_epoch: int, hp) -> dict[str, float]:
        """The metrics of the best epoch, with that epoch (counted from 1) and the epochs run."""
        for epoch, loss in enumerate(logs.get("loss", [])):
            if not math.isfinite(loss):
                raise kt.errors.FailedTrialError(
                    f"the loss became NaN in epoch {initial_epoch + epoch + 1} with "
                    f"{format_values(hp.values)}; lower the learning rate range"
                )
        scores = logs[OBJECTIVE.name]
        best = max(range(len(scores)), key=scores.__getitem__)
        return {**{key: float(values[best]) for key, values in logs.items()},
                "best_epoch": initial_epoch + best + 1, "epochs_trained": len(scores)}


def format_values(values: Mapping[str, Any]) -> str:
    shown = (f"{name}={value:.4g}" if isinstance(value, float) else f"{name}={value}"
             for name, value in values.items() if not name.startswith("tuner/"))
    return ", ".join(shown)


# --- oracles and tuners: KerasTuner's, with kzoo's additions -------------------------------------


class SearchStopped(KzooError):
    """Too many trials failed in a row."""


class _KzooOracle:
    """What kzoo adds to a KerasTuner oracle: the recipe's values (the hyperparameters'
    defaults) as the first values proposed; each trial's wall time, kept in the saved state;
    ``trials.csv`` rewritten after every trial; a trial left running by a killed process
    re-run on resume, unless processes died running it twice already (out of memory, say):
    then it is marked failed; and a clear message when failures stop the search."""

    deaths_before_failing = 2

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.wall_times: dict[str, float] = {}
        self.launches: dict[str, int] = {}  # trial id: times handed to a tuner
        self._started: dict[str, float] = {}

    def _random_values(self):
        defaults = kt.HyperParameters()
        for hp in self.hyperparameters.space:
            defaults.merge([hp])
            if defaults.is_active(hp):
                defaults.values[hp.name] = hp.default
        if not self._duplicate(defaults.values):
            return defaults.values
        return super()._random_values()

    @kt.synchronized
    def create_trial(self, tuner_id):
        trial = super().create_trial(tuner_id)
        if trial.status == RUNNING:
            self._started[trial.trial_id] = time.time()
            self.launches[trial.trial_id] = self.launches.get(trial.trial_id, 0) + 1
            self.save()
        return trial

    @kt.synchronized
    def end_trial(self, trial):
        started = self._started.pop(trial.trial_id, None)
        if started is not None:
            self.wall_times[trial.trial_id] = round(time.time() - started, 2)
        try:
            super().end_trial(trial)
        except SearchStopped:
            self._save_trial(self.trials[trial.trial_id])
            self.save()
            raise
        finally:
            write_trials_table(self, Path(self._project_dir) / TRIALS_TABLE)

    def _check_consecutive_failures(self):
        try:
            super()._check_consecutive_failures()
        except RuntimeError as error:
            last = self.trials[self.end_order[-1]]
            raise SearchStopped(
                f"the search stopped: {self.max_consecutive_failed_trials} trials in a row failed "
                f"(the limit; --max-failures), the last, trial {last.trial_id}, with: "
                f"{_last_line(last.message)}. Each trial's status is in "
                f"{Path(self._project_dir) / TRIALS_TABLE}; fix the cause (e.g. narrow the "
                "learning-rate range) and run the same command again to go on, with a higher "
                "--max-failures if need be"
            ) from error

    def reload(self):
        super().reload()
        # KerasTuner re-runs the trials its saved state lists as ongoing; a kill between saving
        # a new trial and saving that state leaves one only its trial.json knows of.
        for trial_id, trial in sorted(self.trials.items()):
            if trial.status == RUNNING and trial_id not in self._retry_queue:
                self._retry_queue.append(trial_id)
        for trial_id in list(self._retry_queue):
            trial = self.trials[trial_id]
            deaths = self.launches.get(trial_id, 0) - self._run_times[trial_id]
            if trial.status == RUNNING and deaths >= self.deaths_before_failing:
                self._retry_queue.remove(trial_id)
                trial.status = kt.engine.trial.TrialStatus.FAILED
                trial.message = (f"the process running trial {trial_id} died {deaths} times before "
                                 "it finished (killed for lack of memory?); not run again")
                print(f"kzoo: {trial.message}")
                self.end_order.append(trial_id)
                self._save_trial(trial)
        write_trials_table(self, Path(self._project_dir) / TRIALS_TABLE)

    def get_state(self):
        return {**super().get_state(), "kzoo_wall_times": self.wall_times,
                "kzoo_launches": self.launches}

    def set_state(self, state):
        super().set_state(state)
        self.wall_times = dict(state.get("kzoo_wall_times", {}))
        self.launches = dict(state.get("kzoo_launches", {}))


class RandomSearchOracle(_KzooOracle, kt.oracles.RandomSearchOracle):
    pass


def _out_of_memory(error: Exception) -> bool:
    """Whether a fit failed for lack of memory: TensorFlow's error, or XLA's on JAX."""
    if isinstance(error, tf.errors.ResourceExhaustedError):
        return True
    # On JAX, XLA reports it as a JaxRuntimeError (a RuntimeError) starting RESOURCE_EXHAUSTED.
    return isinstance(error, RuntimeError) and "RESOURCE_EXHAUSTED" in str(error)


class BayesianOptimizationOracle(_KzooOracle, kt.oracles.BayesianOptimizationOracle):
    pass


class HyperbandOracle(_KzooOracle, kt.oracles.HyperbandOracle):
    """Hyperband, with ``max_trials`` as an optional cap on its brackets' trials."""

    def __init__(self, *args, max_trials=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_trials = max_trials


def custom_gradients() -> set[str]:
    """TensorFlow's registered ``tf.custom_gradient`` names (none on another backend)."""
    if keras.backend.backend() != "tensorflow":
        return set()  # on JAX the train step is traced by JAX: no tf.custom_gradient, nothing leaks
    return custom_gradient_names()


class _KzooTuner:
    """What kzoo adds to a KerasTuner tuner: its oracle comes from :func:`make_tuner` (the
    algorithm's own ``__init__`` only builds one), its state is saved when the search starts (so
    a search killed in its first trial resumes too), it names each trial it runs, and it frees
    each trial's graphs.

    Graph-mode ``tf.custom_gradient`` registers a gradient function under a new name for every
    trace and never removes it; Keras's train step makes one per model (through
    ``tf.distribute``'s ``all_reduce``), and each keeps its whole graph alive: 5-10 MB a trial
    that ``clear_session`` cannot free. Those a trial registered are dropped when it ends.
    """

    def __init__(self, oracle, hypermodel, **kwargs):
        kt.Tuner.__init__(self, oracle=oracle, hypermodel=hypermodel, **kwargs)

    def on_search_begin(self):
        super().on_search_begin()
        self.save()

    def on_trial_begin(self, trial):
        super().on_trial_begin(trial)
        self._gradients_before_trial = set(custom_gradients())
        print(f"kzoo: {self.tuner_id} runs trial {trial.trial_id}: "
              f"{format_values(trial.hyperparameters.values)}", flush=True)

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        forget_custom_gradients(custom_gradients() - self._gradients_before_trial)


class RandomSearch(_KzooTuner, kt.RandomSearch):
    pass


class BayesianOptimization(_KzooTuner, kt.BayesianOptimization):
    pass


class Hyperband(_KzooTuner, kt.Hyperband):
    pass


ALGORITHMS = {
    "random": (RandomSearchOracle, RandomSearch),
    "hyperband": (HyperbandOracle, Hyperband),
    "bayesian": (BayesianOptimizationOracle, BayesianOptimization),
}


def make_tuner(
    hypermodel: RecipeHyperModel,
    algorithm: str = "random",
    *,
    max_trials: int | None = None,
    epochs: int,
    directory: str | os.PathLike = "tuning",
    project_name: str,
    overwrite: bool = False,
    seed: int = 0,
    max_failures: int = 3,
    max_retries: int = 1,
    hyperband_factor: int = 3,
) -> kt.Tuner:
    """A KerasTuner tuner for ``algorithm`` (``random``, ``hyperband`` or ``bayesian``) with
    kzoo's oracle. Hyperband trains for at most ``epochs`` a trial; ``max_trials`` caps it."""
    if algorithm not in ALGORITHMS:
        raise KzooError(f"unknown search algorithm {algorithm!r}; expected one of "
                        f"{', '.join(ALGORITHMS)}")
    if max_failures < 1 or (max_trials is not None and max_trials < 1):
        raise KzooError(f"max_trials={max_trials} and max_failures={max_failures}; expected >= 1")
    oracle_class, tuner_class = ALGORITHMS[algorithm]
    options = {
        "objective": OBJECTIVE,
        "seed": seed + 1,  # KerasTuner takes seed 0 for "pick one at random"
        "max_retries_per_trial": max_retries,
        "max_consecutive_failed_trials": max_failures,
        "max_trials": max_trials,
    }
    if algorithm == "hyperband":
        options.update(max_epochs=epochs, factor=hyperband_factor)
    try:
        oracle = oracle_class(**options)
    except ImportError as error:
        raise KzooError(f"--algorithm {algorithm} needs scikit-learn and scipy ({error}); pip "
                        "install scikit-learn (or kzoo[bayesian]), or pick random or hyperband"
                        ) from error
    return tuner_class(oracle, hypermodel, directory=str(directory), project_name=project_name,
                       overwrite=overwrite)


# --- the trials table ---------------------------------------------------------------------------


def _last_line(message: str | None) -> str:
    """The error line of a trial's traceback (a failed trial's own message, bare)."""
    lines = [line.strip() for line in (message or "").strip().splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    return last.split("FailedTrialError: ", 1)[-1]


def _cell(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value


def trials_table(oracle: kt.Oracle) -> list[dict[str, Any]]:
    """One row a trial: id, status, every hyperparameter, Hyperband's bookkeeping, the best
    epoch and its validation metric, the epochs trained, the wall time and any error."""
    names = [hp.name for hp in oracle.hyperparameters.space]
    rows = []
    for trial_id in sorted(oracle.trials):
        trial = oracle.trials[trial_id]
        values = trial.hyperparameters.values
        row = {"trial_id": trial_id, "status": trial.status}
        row.update({name: values.get(name) for name in names})
        row.update({column: values[key] for key, column in _HYPERBAND_COLUMNS.items()
                    if key in values})
        for metric in ("best_epoch", "epochs_trained"):
            if trial.metrics.exists(metric):
                row[metric] = int(trial.metrics.get_last_value(metric))
        row[OBJECTIVE.name] = trial.score
        row["wall_time_s"] = getattr(oracle, "wall_times", {}).get(trial_id)
        row["message"] = _last_line(trial.message) if trial.status != COMPLETED else ""
        rows.append(row)
    return rows


def write_trials_table(oracle: kt.Oracle, path: Path) -> list[dict[str, Any]]:
    """Write :func:`trials_table` as CSV, numbers to 6 significant digits (to a temporary file,
    then renamed); return its rows."""
    rows = trials_table(oracle)
    order = ["trial_id", "status", *(hp.name for hp in oracle.hyperparameters.space),
             *_HYPERBAND_COLUMNS.values(), "best_epoch", "epochs_trained", OBJECTIVE.name,
             "wall_time_s", "message"]
    columns = [column for column in order if any(column in row for row in rows)]
    partial = path.with_name(f".partial-{path.name}")
    with partial.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows({key: _cell(value) for key, value in row.items()} for row in rows)
    os.replace(partial, path)
    return rows


# --- distributed roles ------------------------------------------------------------------------

_ENV = ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT")


def _address(text: str, flag: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise KzooError(f"{flag} {text!r} is not HOST:PORT; expected e.g. {flag} 10.0.0.1:8000")
    return host, int(port)


@contextlib.contextmanager
def distributed_role(
    chief: str | None = None, worker: str | None = None, tuner_id: str | None = None
) -> Iterator[str]:
    """Set KerasTuner's ``KERASTUNER_*`` variables for this process's role, and yield it:
    ``"chief"`` (``chief=HOST:PORT``: serve the oracle there), ``"worker"`` (``worker=HOST:PORT``
    of the chief: run trials it hands out, as ``tuner_id``) or ``"single"``. Variables set by
    hand are honoured, as KerasTuner reads them."""
    if chief and worker:
        raise KzooError("--chief and --worker exclude each other: start one chief and any number "
                        "of workers, each in its own process")
    if not (chief or worker):
        if "KERASTUNER_ORACLE_IP" not in os.environ:
            yield "single"
        else:
            yield "chief" if "chief" in os.environ.get("KERASTUNER_TUNER_ID", "") else "worker"
        return
    host, port = _address(chief or worker, "--chief" if chief else "--worker")
    name = "chief" if chief else tuner_id or f"worker-{socket.gethostname()}-{os.getpid()}"
    if worker and "chief" in name:
        raise KzooError(f"tuner id {name!r} contains 'chief', which KerasTuner keeps for the "
                        "chief; pick another --tuner-id")
    if chief:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            try:
                probe.bind((host.strip("[]"), port))
            except OSError as error:
                raise KzooError(f"the chief cannot listen on {host}:{port} ({error.strerror}); "
                                "pick a free port and an address of this machine") from error
    saved = {key: os.environ.get(key) for key in _ENV}
    os.environ.update(KERASTUNER_TUNER_ID=name, KERASTUNER_ORACLE_IP=host,
                      KERASTUNER_ORACLE_PORT=str(port))
    try:
        yield "chief" if chief else "worker"
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# --- tune -------------------------------------------------------------------------------------


class TuneResult(NamedTuple):
    """What :func:`tune` found: the best trial as a recipe (``None`` on a worker, whose chief
    holds the results), its hyperparameters and score, every trial's row, the search
    directory, the KerasTuner tuner, and the retrained run (``retrain_best``)."""

    best_recipe: Recipe | None
    best_hyperparameters: dict[str, Any]
    best_score: float | None
    trials: list[dict[str, Any]]
    directory: Path
    tuner: kt.Tuner
    run: TrainResult | None = None


def _check_settings(path: Path, settings: dict[str, Any]) -> None:
    """A search resumes only with the settings it started with."""
    if not path.is_file():
        return
    previous = json.loads(path.read_text())
    if previous == settings:
        return
    changed = [key for key in settings if key != "recipe" and previous.get(key) != settings[key]]
    before = previous.get("recipe", {})
    changed += [f"recipe.{key}" for key in sorted({*settings["recipe"], *before})
                if settings["recipe"].get(key) != before.get(key)]
    raise KzooError(
        f"{str(path.parent)!r} holds a search with other settings ({', '.join(changed)}); run the "
        "same command as before to resume it, add --overwrite to start afresh, or pick another "
        "--directory or --project"
    )


def tune(
    recipe: str | os.PathLike | Recipe,
    *,
    algorithm: str = "random",
    max_trials: int | None = None,
    epochs: int | None = None,
    search: Mapping[str, Any] | None = None,
    directory: str | os.PathLike = "tuning",
    project_name: str | None = None,
    overwrite: bool = False,
    retrain_best: bool = False,
    seed: int | None = None,
    data_dir: str | os.PathLike | None = None,
    chief: str | None = None,
    worker: str | None = None,
    tuner_id: str | None = None,
    max_failures: int = 3,
    hyperband_factor: int = 3,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: str | int = "auto",
) -> TuneResult:
    """Search a recipe's hyperparameters with KerasTuner, starting from the recipe's own values.

    ``algorithm``: ``random`` (``max_trials`` trials, default 10, of ``epochs`` each: default
    the recipe's), ``hyperband`` (``epochs`` is the most a trial trains; ``max_trials`` an
    optional cap) or ``bayesian``. ``search`` maps hyperparameter names to entries of the
    recipe's ``search:`` section, in YAML form, as :class:`SearchRange` or as ``--search`` text
    (``{"learning_rate": "1e-4:1e-1:log", "dropout": False}``). Running the same call again
    resumes the search in ``directory/project_name``; ``overwrite`` starts afresh.
    ``retrain_best`` trains the best settings on train+validation into a run directory, as
    ``kzoo train`` would. ``chief``/``worker`` (``HOST:PORT``) share one search among processes
    (see :func:`distributed_role`). ``callbacks`` (e.g. EarlyStopping) join every trial's fit.

    >>> result = kzoo.tune("lenet5_mnist", max_trials=20, epochs=3,
    ...                    search={"batch_size": {"values": [32, 128, 2000]}})
    """
    recipe = load_recipe(recipe).with_overrides(epochs=epochs, seed=seed)
    if recipe.finetune is not None:
        raise KzooError(f"recipe {recipe.name!r} fine-tunes a pretrained backbone in two phases; "
                        "kzoo tune searches recipes trained in one (tune its finetune settings "
                        "by hand for now)")
    if algorithm not in ALGORITHMS:
        raise KzooError(f"unknown search algorithm {algorithm!r}; expected one of "
                        f"{', '.join(ALGORITHMS)}")
    overrides = {name: parse_search_entry(name, entry, "the search option") for name, entry in
                 (search or {}).items()}
    search_space(recipe, overrides)  # bad names and ranges fail before the data loads
    splits = load_splits(recipe, data_dir)
    if retrain_best:  # refuse now, not after the search, where there is no test split
        with_validation_in_train(splits, recipe.dataset)
    space = search_space(recipe, overrides, train_size=splits.sizes["train"])
    hypermodel = RecipeHyperModel(recipe, space, splits)
    if max_trials is None and algorithm != "hyperband":
        max_trials = DEFAULT_MAX_TRIALS
    project_name = project_name or f"{recipe.name}-{algorithm}"
    project_dir = Path(directory) / project_name
    recipe_settings = {k: v for k, v in recipe.to_dict().items() if k != "search"}
    settings = json.loads(json.dumps({
        "recipe": recipe_settings, "algorithm": algorithm, "objective": OBJECTIVE.name,
        "space": [tunable.describe() for tunable in space],
        **({"hyperband_factor": hyperband_factor} if algorithm == "hyperband" else {}),
    }))
    with distributed_role(chief=chief, worker=worker, tuner_id=tuner_id) as role:
        if role == "worker" and overwrite:
            raise KzooError("--overwrite is for the chief: a worker never deletes the search "
                            "directory the chief may share")
        if role != "worker" and not overwrite:
            _check_settings(project_dir / SETTINGS_FILE, settings)
        tuner = make_tuner(
            hypermodel, algorithm, max_trials=max_trials, epochs=recipe.epochs,
            directory=directory, project_name=project_name, overwrite=overwrite,
            seed=recipe.seed, max_failures=max_failures, hyperband_factor=hyperband_factor,
        )
        if role != "worker":
            project_dir.mkdir(parents=True, exist_ok=True)  # --overwrite has just removed it
            (project_dir / SETTINGS_FILE).write_text(json.dumps(settings, indent=2))
        print(f"kzoo: {algorithm} search over {format_space(space)} for {recipe.name} "
              f"({role}{'' if role == 'single' else ' ' + os.environ['KERASTUNER_TUNER_ID']}); "
              f"results in {project_dir}", flush=True)
        try:
            tuner.search(splits.examples["train"], splits.examples["validation"],
                         epochs=recipe.epochs,
                         callbacks=list(callbacks), verbose=verbose)
        except KeyboardInterrupt:
            print(f"\nkzoo: interrupted; run the same command again to resume the search in "
                  f"{project_dir}")
            raise
    if role == "worker":
        print(f"kzoo: worker {tuner.tuner_id} done; the chief holds the results "
              f"({project_dir / TRIALS_TABLE} on its machine)")
        return TuneResult(None, {}, None, [], project_dir, tuner)
    return _report(tuner, hypermodel, algorithm, project_dir, retrain_best, data_dir, verbose)


def format_space(space: Sequence[Tunable]) -> str:
    return "; ".join(
        f"{t.name} in {list(t.entry.values)}" if t.entry.values is not None else
        f"{t.name} in {t.entry.min:g}..{t.entry.max:g}"
        + (f" ({t.entry.sampling})" if t.entry.sampling not in (None, 'linear') else "")
        + (f" step {t.entry.step:g}" if t.entry.step is not None else "")
        for t in space
    )


def _report(tuner, hypermodel, algorithm, project_dir, retrain_best, data_dir, verbose):
    """The summary, the trials table and the best trial as a recipe (and its final training)."""
    oracle = tuner.oracle
    table = project_dir / TRIALS_TABLE
    rows = write_trials_table(oracle, table)
    best = [trial for trial in oracle.get_best_trials(1) if trial.status == COMPLETED]
    if not best:
        statuses = ", ".join(f"{row['trial_id']}: {row['status']}" for row in rows) or "none ran"
        raise KzooError(f"no trial of the search completed ({statuses}); {table} gives each "
                        "trial's error")
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        tuner.results_summary(num_trials=5)
    print(summary.getvalue())
    (project_dir / "summary.txt").write_text(summary.getvalue())

    trial = best[0]
    values = trial.hyperparameters.values
    chosen = {t.name: values[t.name] for t in hypermodel.space if t.name in values}
    recipe = hypermodel.recipe
    best_recipe = dataclasses.replace(
        apply_values(recipe, {name: _significant(v) if isinstance(v, float) else v
                              for name, v in chosen.items()}),
        name=f"{recipe.name}_tuned",
        epochs=int(values.get("tuner/epochs", recipe.epochs)),
        search={},
        description=(f"{recipe.description} Tuned by kzoo tune ({algorithm}, trial "
                     f"{trial.trial_id}: {OBJECTIVE.name} {trial.score:.4f}).").strip(),
    )
    path = project_dir / f"{best_recipe.name}.yaml"
    save_recipe(best_recipe, path)
    print(f"kzoo: best {OBJECTIVE.name} {trial.score:.4f} in trial {trial.trial_id} "
          f"({format_values(chosen)}); {len(rows)} trials in {table}; best recipe: {path}")
    run = None
    if retrain_best:
        print(f"kzoo: retraining {best_recipe.name} on train+validation")
        run = train(best_recipe, data_dir=data_dir, train_on_validation=True, verbose=verbose)
    return TuneResult(best_recipe, chosen, float(trial.score), rows, project_dir, tuner, run)
