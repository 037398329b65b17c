"""Transfer learning on a folder of images: ``fine_tune`` (the ``kzoo finetune`` command).

"Don't be a hero": take a backbone pretrained on ImageNet and fine-tune it on your own small
folder, in two phases (:mod:`kzoo.training.phases`), as fastai's ``fine_tune`` does: the head
on the frozen backbone, then the top of the backbone unfrozen. Every image is framed the same
way in training and prediction: the central ``center_crop`` of it, undistorted (0.875 by
default), resized to the input size.

The run (:class:`kzoo.training.run.Run`) holds ``model.keras`` (loads with ``safe_mode=True``;
it carries its class names and image framing), ``class_names.json``, ``recipe.yaml``,
``history.csv``, ``metrics.json``, ``confusion_matrix.csv``, ``predictions.csv`` (every
validation image), ``skipped.csv`` and ``report.html`` with its pictures in ``report/``.

>>> result = kzoo.fine_tune("~/photos/ants_vs_bees", backbone="mobilenet_v2")
>>> result.metrics["val_accuracy"]
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Mapping
from typing import Any

import keras

from kzoo.analysis.evaluation import format_per_class, write_predictions
from kzoo.data.augment import augmentation as make_augmentation
from kzoo.data.datasets import data_dirs, find_image_folder, image_folder, print_data_summary
from kzoo.data.images import describe_skipped
from kzoo.data.pipeline import streams
from kzoo.data.scan import folder_classes, split_folders
from kzoo.errors import KzooError
from kzoo.files import write_csv, write_json
from kzoo.models.blocks import with_classifier_info
from kzoo.models.parts import classifier_parts
from kzoo.models.registry import build, get_spec, list_models
from kzoo.models.weights import search_weights_in
from kzoo.recipes.recipe import FineTune, Recipe
from kzoo.recipes.zoo import DEFAULT_BACKBONE, default_recipe, load_recipe
from kzoo.training.lr_finder import RULE, STEPS, write_sweep
from kzoo.training.phases import fine_tuning_sweep, kept_epoch, train_head, train_top
from kzoo.training.run import Run, TrainResult, merge_phases, write_history

# --- the recipe ----------------------------------------------------------------------------------


def finetune_recipe(
    folder: str | os.PathLike | None = None,
    recipe: str | os.PathLike | Recipe | None = None,
    *,
    backbone: str | None = None,
    model_options: Mapping[str, Any] | None = None,
    finetune: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> Recipe:
    """The recipe a fine-tuning run follows: ``recipe`` (or :func:`default_recipe`) with
    ``folder`` as its data. ``model_options`` are merged into the recipe's (``weights``:
    ``"imagenet"``, a file, or ``None`` for random initialisation; ``input_shape``; ...),
    ``finetune`` into its ``finetune:`` section (where ``center_crop: None`` squashes whole
    images), and ``overrides`` set any other recipe field (``None`` leaves a value).
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
    options = dict(base.model_options)
    if backbone is not None and backbone != base.model:
        allowed = get_spec(backbone).options
        options = {key: value for key, value in options.items() if key in allowed}
        options.setdefault("weights", "imagenet")
        base = dataclasses.replace(base, model=backbone)
    options.update(model_options or {})
    if "image_size" in options:  # a side (or height, width): the input shape of a colour image
        side = options.pop("image_size")
        side = (side, side) if isinstance(side, int) else tuple(side)
        options["input_shape"] = [int(side[0]), int(side[1]), 3]
    if options.get("weights") is not None:
        options["weights"] = str(options["weights"])
    recipe = dataclasses.replace(base, model_options=options).with_overrides(**overrides)
    section = dict(finetune or {})
    if "center_crop" in section and section["center_crop"] is None:  # a value: squash whole
        section.pop("center_crop")
        recipe = dataclasses.replace(recipe, finetune=dataclasses.replace(recipe.finetune,
                                                                          center_crop=None))
    return recipe.with_overrides(**section)


# --- the run ----------------------------------------------------------------------------------------


def fine_tune(
    folder: str | os.PathLike | None = None,
    recipe: str | os.PathLike | Recipe | None = None,
    *,
    backbone: str | None = None,
    model_options: Mapping[str, Any] | None = None,
    finetune: Mapping[str, Any] | None = None,
    learning_rate: float | str | None = None,
    data_dir: str | os.PathLike | None = None,
    run_dir: str | os.PathLike | None = None,
    distribution: Mapping[str, Any] | None = None,
    verbose: str | int = "auto",
    **overrides: Any,
) -> TrainResult:
    """Fine-tune a pretrained backbone on a folder of images, in two phases (see the module).

    - **data**: ``folder`` holds ``train/`` and ``val/`` (or ``validation/``) folders of class
      folders, or the class folders directly (a seeded ``validation_split`` is then held out);
      ``data_dir`` is where named data and ImageNet weights are looked for.
    - **recipe**: a name in ``zoo_configs/``, a YAML path or a :class:`Recipe`; by default
      :func:`default_recipe`. Every other argument overrides it, ``None`` leaving a value.
    - **model**: ``backbone`` (``kzoo list --tag pretrained``) and ``model_options``
      (``weights``: ``"imagenet"``, a file or ``None``; ``image_size``; ``dropout``; ...).
    - **schedule**: ``finetune``, the recipe's ``finetune:`` section (``head_epochs``,
      ``head_learning_rate``, ``unfreeze``, ``discriminative_lr``, ``center_crop``,
      ``keep_best``, ...); ``learning_rate`` of the fine-tuning phase, or ``"auto"`` for the
      learning-rate finder's suggestion (:mod:`kzoo.training.lr_finder`), found after the head
      phase; ``overrides``: any other recipe field (``epochs``, ``batch_size``,
      ``augmentation``, ``seed``, ``precision``, ``tta``, ``class_weight``, ...).
    - **runtime**: ``run_dir`` (default ``runs/NAME-TIME``), ``distribution`` (``coordinator``,
      ``num_processes``, ``process_id``, ``devices``: the fine-tuning phase spread over
      processes and devices, :mod:`kzoo.training.distributed`), ``verbose``.

    >>> model, history, metrics, run_dir = kzoo.fine_tune("ants_bees/", backbone="mobilenet_v2")
    """
    recipe = finetune_recipe(
        folder, recipe, backbone=backbone, model_options=model_options, finetune=finetune,
        learning_rate=None if learning_rate == "auto" else learning_rate, **overrides)
    with Run(recipe, "finetune", run_dir=run_dir, data_dir=data_dir,
             distribution=distribution) as run:
        return run_fine_tuning(run, verbose, find_rate=learning_rate == "auto")


def run_fine_tuning(run: Run, verbose: str | int = "auto", *, find_rate: bool = False,
                    sweep_only: bool = False, sweep_steps: int = STEPS) -> TrainResult:
    """The pieces of a fine-tuning run, inside ``run``: read the folder, build the model, the
    head phase, the learning-rate sweep (with ``find_rate``; with ``sweep_only`` the run ends
    there), the fine-tuning phase, the final evaluation and the report."""
    recipe, data_dir = run.recipe, run.data_dir
    run.distributed.check_same("their settings", json.dumps(recipe.to_dict(), sort_keys=True,
                                                            default=str),
                               "Start every process with the same recipe and the same flags")
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
    chief = run.chief
    spec_shape = get_spec(recipe.model).input_shape or (224, 224, 3)
    shape = tuple(recipe.model_options.get("input_shape", spec_shape))

    def build_model() -> keras.Model:
        with search_weights_in(data_dir, *folders):
            built = build(recipe.model, num_classes=len(class_names), **recipe.model_options)
        classifier_parts(built)  # a fine-tunable classifier: fails with one line if not
        return with_classifier_info(built, class_names, recipe.finetune.center_crop)

    # The model (its weights found, downloaded or refused) before the folder is scanned, with
    # the class folders as listed, so a missing weights file fails before a long scan.
    class_names = folder_classes(folder, split_folders(folder))
    building = time.perf_counter()
    model = build_model()
    build_s = time.perf_counter() - building
    splits = image_folder(folder, shape[:2], shape[2], recipe.validation_split, recipe.seed,
                          center_crop=recipe.finetune.center_crop, progress=verbose != 0 and chief)
    if list(splits.class_names) != list(class_names):
        class_names = splits.class_names
        model = build_model()
    class_names, skipped, sizes = splits.class_names, splits.skipped, splits.sizes
    print(f"kzoo: fine-tuning {recipe.model} on {folder}: {sizes['train']} training and "
          f"{sizes['validation']} validation images"
          + (f", {sizes['test']} test images" if "test" in sizes else " (no test split)")
          + f", {len(class_names)} classes "
          f"({', '.join(class_names[:10])}{', ...' if len(class_names) > 10 else ''}); "
          f"run dir {run.dir}")
    audited = print_data_summary(splits)
    if skipped:
        print("kzoo: " + describe_skipped(skipped, root=folder) + "  (all in skipped.csv)")
    read_s = time.perf_counter() - run.started - build_s
    run.create(class_names)  # only now: bad input above leaves no run directory behind
    if chief:
        write_csv(run.dir / "skipped.csv", ["path", "reason"], skipped)
        write_json(run.dir / "audit.json", audited)
    augment = make_augmentation(recipe.augmentation, seed=recipe.seed)
    head = train_head(model, splits, recipe, augment, verbose if chief else 0)
    found = None
    if find_rate or sweep_only:
        found = fine_tuning_sweep(model, splits, recipe, augment, sweep_steps)
        recipe = recipe.with_overrides(learning_rate=found.suggestion)
        print(f"kzoo: learning-rate finder suggests {found.suggestion:.3g} for fine-tuning "
              f"({RULE}); plot: {run.dir / 'lr_find.png'}")
        run.update_recipe(recipe)
        if chief:
            write_sweep(found, run.dir, f"fine-tuning {recipe.model} on {folder.name}")
        if sweep_only:
            return TrainResult(model, {}, {"kind": "lr_find", **found.to_dict()}, run.dir)
    model = run.distributed.replicate(model, build_model)  # the head phase ran whole, here
    top = train_top(model, splits, recipe, augment, verbose, baseline=head.kept_scores,
                    distributed=run.distributed)
    if not chief:
        return run.worker_result(model)
    history = merge_phases([("head", head.history), ("fine-tune", top.history)])
    write_history(history, run.dir / "history.csv")
    if history["loss"] and not math.isfinite(history["loss"][-1]) and not recipe.finetune.keep_best:
        raise KzooError(
            f"the loss became NaN while fine-tuning; lower the learning rates (head "
            f"{recipe.finetune.head_learning_rate}, fine-tune {recipe.optimizer.learning_rate})"
        )
    kept = kept_epoch(head, top)
    if kept is not None:
        print(f"kzoo: keeping the model of epoch {kept['epoch']} ({kept['phase']}, validation "
              f"accuracy {history['val_accuracy'][kept['epoch'] - 1]:.4f})")
    run.save_model(model)
    fit_s = time.perf_counter() - run.started
    model = run.model_as_saved(model)

    metrics, probabilities = run.evaluate(model, splits)
    write_predictions(splits.examples["validation"], probabilities["validation"], class_names,
                      run.dir / "predictions.csv")
    print(format_per_class(metrics["validation"]["per_class"]))
    metrics.update(
        dataset=str(folder), skipped=len(skipped), epochs_run=len(history["epoch"]),
        final_val_accuracy=history["val_accuracy"][-1] if history["epoch"] else None,
        kept_epoch=kept,
        data={**splits.scan.stats.to_dict(),
              "in_memory": not any(streams(part) for part in splits.examples.values())},
        finetune=dataclasses.asdict(recipe.finetune), class_weight=recipe.class_weight,
    )
    if found is not None:
        metrics["learning_rate_finder"] = found.summary()
    result = run.finish(model, history, metrics, splits=splits, timings_s={
        "read_images": read_s, "scan_s": splits.scan.stats.seconds, **head.timings,
        **top.timings})
    metrics = result.metrics

    from kzoo.analysis.reports import write_report

    write_report(run.dir, validation=splits.examples["validation"],
                 probabilities=probabilities["validation"], history=history, metrics=metrics,
                 skipped=skipped, title=f"{recipe.model} fine-tuned on {folder.name}",
                 model=model)
    figure = (f"test accuracy {metrics['test_accuracy']:.4f}, " if splits.has_test
              else "no test split; ")
    print(f"kzoo: {figure}validation accuracy {metrics['val_accuracy']:.4f} in {fit_s:.0f}s; "
          f"report: {run.dir / 'report.html'}")
    return result
