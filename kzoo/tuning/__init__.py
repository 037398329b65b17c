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

The package is split by job: ``space`` (the search space), ``hypermodel``, ``oracles`` (oracles
and tuners), ``table`` (``trials.csv``) and ``distributed`` (chief and workers); this module
runs a search and reports it.

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
import dataclasses
import hashlib
import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import keras
import keras_tuner as kt

from kzoo.data.augment import augmentation
from kzoo.errors import KzooError
from kzoo.files import write_atomically, write_json
from kzoo.recipes.recipe import Recipe
from kzoo.recipes.search import parse_search_entry
from kzoo.recipes.zoo import load_recipe, save_recipe
from kzoo.training.run import TrainResult
from kzoo.training.train import load_splits, train, with_validation_in_train
from kzoo.tuning.distributed import distributed_role
from kzoo.tuning.hypermodel import RecipeHyperModel, out_of_memory
from kzoo.tuning.oracles import (
    ALGORITHMS,
    SearchStopped,
    custom_gradients,
    make_tuner,
    write_failure,
)
from kzoo.tuning.space import (
    Tunable,
    apply_values,
    format_space,
    format_values,
    search_space,
    significant,
)
from kzoo.tuning.table import (
    COMPLETED,
    OBJECTIVE,
    SETTINGS_HP,
    TRIALS_TABLE,
    trials_table,
    write_trials_table,
)

__all__ = [
    "ALGORITHMS",
    "RecipeHyperModel",
    "SearchStopped",
    "Tunable",
    "TuneResult",
    "custom_gradients",
    "distributed_role",
    "make_tuner",
    "out_of_memory",
    "search_space",
    "trials_table",
    "tune",
    "write_trials_table",
]
DEFAULT_MAX_TRIALS = 10
DEFAULT_MAX_FAILURES = 3  # failed trials in a row that stop a search
DEFAULT_HYPERBAND_FACTOR = 3
SETTINGS_FILE = "search.json"


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
        "--run-dir or --project"
    )


def tune(
    recipe: str | os.PathLike | Recipe,
    *,
    algorithm: str = "random",
    max_trials: int | None = None,
    search: Mapping[str, Any] | None = None,
    run_dir: str | os.PathLike = "tuning",
    project_name: str | None = None,
    overwrite: bool = False,
    retrain_best: bool = False,
    data_dir: str | os.PathLike | None = None,
    distribution: Mapping[str, Any] | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: str | int = "auto",
    **options: Any,
) -> TuneResult:
    """Search a recipe's hyperparameters with KerasTuner, starting from the recipe's own values.

    - **search**: ``algorithm``: ``random`` (``max_trials`` trials, default 10, of ``epochs``
      each: default the recipe's), ``hyperband`` (``epochs`` is the most a trial trains;
      ``max_trials`` an optional cap; ``hyperband_factor``, default 3) or ``bayesian``.
      ``search`` maps hyperparameter names to entries of the recipe's ``search:`` section, in
      YAML form, as :class:`SearchRange` or as ``--search`` text (``{"learning_rate":
      "1e-4:1e-1:log", "dropout": False}``). ``max_failures`` (default 3) failed trials in a
      row stop the search.
    - **where**: running the same call again resumes the search in ``run_dir/project_name``;
      ``overwrite`` starts afresh. ``retrain_best`` trains the best settings on
      train+validation into a run directory, as ``kzoo train`` would.
    - **distribution**: ``chief`` or ``worker`` (``HOST:PORT``) share one search among
      processes (see :func:`distributed_role`), ``tuner_id`` names a worker, and a worker
      silent for ``worker_timeout`` seconds (default: 3x the longest silence seen, at least a
      minute) loses its trial to another.
    - ``options``: besides ``max_failures`` and ``hyperband_factor``, recipe fields that
      override the recipe's (``epochs``, ``seed``, ``precision``, ...). ``callbacks`` (e.g.
      EarlyStopping) join every trial's fit.

    >>> result = kzoo.tune("lenet5_mnist", max_trials=20, epochs=3,
    ...                    search={"batch_size": {"values": [32, 128, 2000]}})
    """
    max_failures = options.pop("max_failures", DEFAULT_MAX_FAILURES)
    hyperband_factor = options.pop("hyperband_factor", DEFAULT_HYPERBAND_FACTOR)
    roles = dict(distribution or {})
    unknown = sorted(set(roles) - {"chief", "worker", "tuner_id", "worker_timeout"})
    if unknown:
        raise KzooError(f"tuning distribution setting {unknown[0]!r} is unknown; expected chief, "
                        "worker, tuner_id or worker_timeout")
    recipe = load_recipe(recipe).with_overrides(**options)
    if recipe.finetune is not None:
        raise KzooError(f"recipe {recipe.name!r} fine-tunes a pretrained backbone in two phases; "
                        "kzoo tune searches recipes trained in one (tune its finetune settings "
                        "by hand for now)")
    if isinstance(augmentation(recipe.augmentation), list):
        raise KzooError(f"recipe {recipe.name!r} uses the {recipe.augmentation!r} augmentation, "
                        "which follows each image from epoch to epoch; kzoo tune cannot apply it "
                        "yet: tune a copy of the recipe with another preset (e.g. augmentation: "
                        "cifar)")
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
    if max_trials is None and algorithm != "hyperband":
        max_trials = DEFAULT_MAX_TRIALS
    project_name = project_name or f"{recipe.name}-{algorithm}"
    project_dir = Path(run_dir) / project_name
    recipe_settings = {k: v for k, v in recipe.to_dict().items() if k != "search"}
    settings = json.loads(json.dumps({  # what the chief and its workers must agree on
        "recipe": recipe_settings, "algorithm": algorithm, "objective": OBJECTIVE.name,
        "space": [tunable.describe() for tunable in space],
        **({"hyperband_factor": hyperband_factor} if algorithm == "hyperband" else {}),
    }))
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    hypermodel = RecipeHyperModel(recipe, space, splits, settings_digest=digest)
    with distributed_role(chief=roles.get("chief"), worker=roles.get("worker"),
                          tuner_id=roles.get("tuner_id")) as role:
        if role == "worker" and overwrite:
            raise KzooError("--overwrite is for the chief: a worker never deletes the search "
                            "directory the chief may share")
        if role != "worker" and not overwrite:
            _check_settings(project_dir / SETTINGS_FILE, settings)
        tuner = make_tuner(
            hypermodel, algorithm, max_trials=max_trials, epochs=recipe.epochs,
            directory=run_dir, project_name=project_name, overwrite=overwrite,
            seed=recipe.seed, max_failures=max_failures, hyperband_factor=hyperband_factor,
            worker_timeout=roles.get("worker_timeout"),
        )
        if role == "worker":
            _check_chief_settings(tuner, digest, settings, project_dir / SETTINGS_FILE)
        if role != "worker":
            project_dir.mkdir(parents=True, exist_ok=True)  # --overwrite has just removed it
            write_json(project_dir / SETTINGS_FILE, settings)
        print(f"kzoo: {algorithm} search over {format_space(space)} for {recipe.name} "
              f"({role}{'' if role == 'single' else ' ' + os.environ['KERASTUNER_TUNER_ID']}); "
              f"results in {project_dir}", flush=True)
        try:
            tuner.search(splits.examples["train"], splits.examples["validation"],
                         epochs=recipe.epochs, callbacks=list(callbacks), verbose=verbose)
        except KeyboardInterrupt:
            print(f"\nkzoo: interrupted; run the same command again to resume the search in "
                  f"{project_dir}")
            raise
        except OSError as error:  # the tuner's own saves, outside the oracle's lock
            raise SearchStopped(write_failure(project_dir, error)) from error
    if role == "worker":
        print(f"kzoo: worker {tuner.tuner_id} done: the chief ended the search (its trial limit "
              "reached, too many failed trials, or files it could not write); it holds the "
              f"results ({project_dir / TRIALS_TABLE} on its machine)")
        return TuneResult(None, {}, None, [], project_dir, tuner)
    if tuner.oracle.stop_reason:
        with contextlib.suppress(OSError):  # the reason says so if it was a failed write
            write_trials_table(tuner.oracle, project_dir / TRIALS_TABLE)
        raise SearchStopped(tuner.oracle.stop_reason)
    return _report(tuner, hypermodel, algorithm, project_dir, retrain_best, data_dir, verbose)


def _check_chief_settings(tuner, digest: str, settings: dict[str, Any], saved: Path) -> None:
    """A worker runs trials only for a chief searching with its own settings: the chief's
    digest travels in its search space; where the search directory is shared, the differing
    keys are named."""
    chiefs = tuner.oracle.get_space().values.get(SETTINGS_HP)
    if chiefs in (None, digest):
        return
    detail = "start the worker with the same recipe, flags and kzoo version as the chief"
    if saved.is_file():
        chief_settings = json.loads(saved.read_text())
        keys = sorted(key for key in {*settings, *chief_settings} if key != "recipe"
                      and settings.get(key) != chief_settings.get(key))
        mine, theirs = settings.get("recipe", {}), chief_settings.get("recipe", {})
        keys += [f"recipe.{key}" for key in sorted({*mine, *theirs}) if mine.get(key) != theirs.get(key)]
        detail = f"they differ in {', '.join(keys)}; {detail}"
    raise KzooError(f"this worker's search settings are not the chief's ({detail})")


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
    write_atomically(project_dir / "summary.txt",
                     lambda partial: partial.write_text(summary.getvalue()))

    trial = best[0]
    values = trial.hyperparameters.values
    chosen = {t.name: values[t.name] for t in hypermodel.space if t.name in values}
    recipe = hypermodel.recipe
    best_recipe = dataclasses.replace(
        apply_values(recipe, {name: significant(v) if isinstance(v, float) else v
                              for name, v in chosen.items()}),
        name=f"{recipe.name}_tuned",
        epochs=int(values.get("tuner/epochs", recipe.epochs)),
        search={},
        description=(f"{recipe.description} Tuned by kzoo tune ({algorithm}, trial "
                     f"{trial.trial_id}: {OBJECTIVE.name} {trial.score:.4f}).").strip(),
    )
    path = project_dir / f"{best_recipe.name}.yaml"
    write_atomically(path, lambda partial: save_recipe(best_recipe, partial))
    print(f"kzoo: best {OBJECTIVE.name} {trial.score:.4f} in trial {trial.trial_id} "
          f"({format_values(chosen)}); {len(rows)} trials in {table}; best recipe: {path}")
    run = None
    if retrain_best:
        print(f"kzoo: retraining {best_recipe.name} on train+validation")
        run = train(best_recipe, data_dir=data_dir, train_on_validation=True, verbose=verbose)
    return TuneResult(best_recipe, chosen, float(trial.score), rows, project_dir, tuner, run)
