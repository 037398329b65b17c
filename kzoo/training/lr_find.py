"""``kzoo.lr_find``: the learning-rate finder (:mod:`kzoo.training.lr_finder`) run on a recipe
or on a folder, as a run of its own (``runs/lr-find-NAME-TIME``)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from kzoo.recipes.recipe import Recipe
from kzoo.recipes.zoo import load_recipe
from kzoo.training.finetune import finetune_recipe, run_fine_tuning
from kzoo.training.lr_finder import STEPS, write_sweep
from kzoo.training.run import RUNS_ROOT, Run
from kzoo.training.train import learning_rate_sweep, load_splits


def lr_find(
    target: str | os.PathLike | Recipe,
    *,
    steps: int = STEPS,
    data_dir: str | os.PathLike | None = None,
    run_dir: str | os.PathLike | None = None,
    verbose: str | int = "auto",
    **options: Any,
) -> dict[str, Any]:
    """Run the learning-rate finder on a recipe (a name, a YAML path or a :class:`Recipe`), or
    on an image folder: then on its fine-tuning phase, after the head phase, with ``options``
    as :func:`kzoo.fine_tune` takes them (``backbone``, ``model_options``, ``finetune`` and
    recipe fields); for a recipe, ``options`` are recipe fields (``batch_size``, ``seed``, ...).
    Writes ``lr_find.png`` and ``lr_find.json`` into ``run_dir`` (default
    ``runs/lr-find-NAME-TIME``) and returns the sweep's summary: ``suggestion``, ``rule``,
    ``minimum``, ``steepest``, ``diverged``, ``steps``, ``warning`` (``None``, or why the
    suggestion is doubtful), ``run_dir``.

    >>> kzoo.lr_find("lenet5_mnist")["suggestion"]
    """
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder = isinstance(target, (str, os.PathLike)) and Path(target).expanduser().is_dir()
    if folder:
        recipe = finetune_recipe(target, options.pop("recipe", None), **options)
    else:
        recipe = load_recipe(target).with_overrides(**options)
    name = Path(target).name if folder else recipe.name
    run_dir = run_dir or RUNS_ROOT / f"lr-find-{name}-{stamp}"
    with Run(recipe, "lr_find", run_dir=run_dir, data_dir=data_dir) as run:
        if folder or recipe.finetune is not None:
            summary = run_fine_tuning(run, verbose, sweep_only=True, sweep_steps=steps).metrics
        else:
            splits = load_splits(recipe, data_dir)
            found = learning_rate_sweep(recipe, splits, steps)
            run.create(splits.class_names)
            write_sweep(found, run.dir, f"{recipe.model} on {recipe.dataset}")
            summary = found.to_dict()
    keys = ("suggestion", "rule", "minimum", "steepest", "diverged", "steps", "warning")
    return {key: summary[key] for key in keys} | {"run_dir": run.dir}
