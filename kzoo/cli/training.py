"""``kzoo train``, ``kzoo finetune`` and ``kzoo lr-find``: training runs."""

from __future__ import annotations

import argparse
import functools
import math
import os
from pathlib import Path
from typing import Any

from kzoo.cli.flags import (
    add,
    add_cluster,
    add_data_dir,
    add_fields,
    add_image_size,
    add_loudness,
    add_model,
    add_resume,
    add_run_dir,
    cluster,
    count,
    fraction,
    given,
    keras_verbosity,
    model_options,
    parameter_default,
    recipe_values,
)
from kzoo.errors import KzooError

TRAIN_FIELDS = ("epochs", "batch_size", "learning_rate", "class_weight", "precision",
                "steps_per_execution", "tta", "seed")
# finetune's recipe fields: those of its finetune: section, then the others.
FINETUNE_SECTION = ("head_epochs", "head_learning_rate", "unfreeze", "discriminative_lr",
                    "feature_views", "center_crop", "cache_features", "keep_best")
FINETUNE_FIELDS = ("epochs", "learning_rate", "batch_size", "augmentation", "class_weight",
                   "validation_split", "precision", "tta", "seed")
LR_FIND_FIELDS = ("batch_size", "precision", "seed")


def backend_for_processes(args: argparse.Namespace) -> None:
    """Training across processes runs on Keras's JAX backend (the only one with a
    multi-machine path): choose it where the user has not chosen a backend."""
    from kzoo.training.distributed import Cluster

    processes = Cluster.from_settings(**cluster(args)).num_processes
    if processes > 1 and "KERAS_BACKEND" not in os.environ:
        os.environ["KERAS_BACKEND"] = "jax"
        print(f"kzoo: training across {processes} processes on Keras's JAX backend")


# --- what needs no TensorFlow, checked before it loads ------------------------------------------


def check_data_dir(data_dir: str | None) -> list[Path]:
    """``--data-dir`` and ``$KZOO_DATA_DIR``, each checked to exist."""
    found = []
    for folder in (data_dir, os.environ.get("KZOO_DATA_DIR")):
        if folder:
            path = Path(folder).expanduser()
            if not path.exists():
                raise KzooError(f"data directory {str(path)!r} does not exist; pass an existing "
                                "folder to --data-dir / KZOO_DATA_DIR")
            found.append(path)
    return found


def check_image_folder(folder: str, data_dir: str | None) -> None:
    """``folder`` exists, as a path or as a folder of that name in a data directory."""
    folders = check_data_dir(data_dir)
    path = Path(folder).expanduser()
    if path.is_dir() or (os.sep not in folder and any((f / folder).is_dir() for f in folders)):
        return
    searched = f" (nor in {', '.join(str(f) for f in folders)})" if folders else ""
    raise KzooError(f"image folder {folder!r} does not exist{searched}; pass a folder of class "
                    "folders, or --data-dir holding it")


def check_weights_path(weights: Any) -> None:
    """A ``--weights`` path (not ``imagenet`` or a bare file name, which are looked for in the
    weights folders) names an existing file."""
    if not isinstance(weights, str) or weights == "imagenet":
        return
    path = Path(weights).expanduser()
    if not path.is_file() and path.name != weights:
        raise KzooError(f"weights file {weights!r} does not exist; pass --weights imagenet, "
                        "none, or the path of a Keras weights file (.h5 / .weights.h5)")


def check_model(args: argparse.Namespace, recipe: Any = None, *,
                default: str | None = None) -> None:
    """The backbone (a pretrained model: ``--backbone``, else the recipe's, else ``default``,
    else fine-tuning's), its ``--model-option`` names and a ``--weights`` path."""
    from kzoo.models.registry import get_spec, list_models
    from kzoo.recipes.zoo import DEFAULT_BACKBONE

    name = (getattr(args, "backbone", None) or (recipe.model if recipe else None) or default
            or DEFAULT_BACKBONE)
    spec = get_spec(name)
    if "pretrained" not in spec.tags:
        given = "--backbone " if getattr(args, "backbone", None) else "model "
        raise KzooError(f"{given}{name!r} has no pretrained backbone to fine-tune; pick one of "
                        f"{', '.join(list_models(tag='pretrained'))} (`kzoo list --tag pretrained`)")
    given_options = dict(args.model_options or [])
    unknown = sorted(set(given_options) - set(spec.options) - {"image_size"})
    if unknown:
        raise KzooError(f"model {name!r} has no option {', '.join(repr(u) for u in unknown)}; "
                        f"it accepts: {', '.join(sorted({*spec.options, 'image_size'}))}")
    for key, value in given_options.items():
        check_option_value(name, key, value, spec.options.get(key))
    check_weights_path(model_options(args).get("weights"))


def check_option_value(model: str, key: str, value: Any, default: Any) -> None:
    """A ``--model-option`` value of the type of the option's default, where that is a
    number or a flag (a whole number is a number)."""
    if isinstance(default, bool):
        wanted, ok = "true or false", isinstance(value, bool)
    elif isinstance(default, (int, float)):
        ok = isinstance(value, int if isinstance(default, int) else (int, float))
        ok = ok and not isinstance(value, bool) and math.isfinite(value)
        wanted = "a whole number" if isinstance(default, int) else "a number"
    else:
        return
    if not ok:
        raise KzooError(f"--model-option {key}={value!r} for {model!r}: expected {wanted} (like "
                        f"{key}={str(default).lower() if isinstance(default, bool) else default})")


def check_finetune(args: argparse.Namespace) -> None:
    """``kzoo finetune``'s recipe, model and folder."""
    from kzoo.recipes.zoo import load_recipe

    recipe = load_recipe(args.recipe) if args.recipe else None
    check_model(args, recipe)
    folder = args.folder or (recipe.dataset if recipe else None)
    if folder is not None:
        check_image_folder(folder, args.data_dir)
    else:
        check_data_dir(args.data_dir)


# --- the commands --------------------------------------------------------------------------------


def _train(args: argparse.Namespace) -> None:
    from kzoo.recipes.zoo import load_recipe

    load_recipe(args.recipe)  # a missing or bad recipe fails before TensorFlow loads
    check_data_dir(args.data_dir)
    backend_for_processes(args)
    from kzoo.training.train import train

    train(args.recipe, **given(args, TRAIN_FIELDS), dropout=args.dropout,
          data_dir=args.data_dir, run_dir=args.run_dir, resume=args.resume,
          verbose=keras_verbosity(args), distribution=cluster(args))


def _finetune(args: argparse.Namespace) -> None:
    check_finetune(args)
    backend_for_processes(args)
    from kzoo.training.finetune import fine_tune

    section = given(args, FINETUNE_SECTION)
    fine_tune(args.folder, args.recipe, **given(args, ["backbone"]),
              model_options=model_options(args), finetune=section,
              **given(args, FINETUNE_FIELDS), data_dir=args.data_dir, run_dir=args.run_dir,
              distribution=cluster(args), verbose=keras_verbosity(args))


def _lr_find(args: argparse.Namespace) -> None:
    options: dict[str, Any] = given(args, ["backbone"])
    if model_options(args):
        options["model_options"] = model_options(args)
    if options and not Path(args.target).expanduser().is_dir():
        raise KzooError(f"--backbone, --weights, --image-size and --model-option apply to an "
                        f"image folder; {args.target!r} is a recipe")
    if Path(args.target).expanduser().is_dir():
        check_model(args)
        check_data_dir(args.data_dir)
    else:
        from kzoo.recipes.zoo import load_recipe

        load_recipe(args.target)
    from kzoo.training.lr_find import lr_find

    found = lr_find(args.target, **given(args, ["steps", *LR_FIND_FIELDS]), **options,
                    data_dir=args.data_dir, run_dir=args.run_dir, verbose=keras_verbosity(args))
    print(f"kzoo: suggested learning rate {found['suggestion']:.3g}: {found['rule']} "
          f"({found['minimum']:.3g}); steepest descent at {found['steepest']:.3g}")
    print(f"kzoo: plot in {Path(found['run_dir']) / 'lr_find.png'}; train at it with --lr "
          f"{found['suggestion']:.3g}, or let --lr auto find it")


@functools.cache
def finetune_defaults() -> dict[str, Any]:
    """What a bare ``kzoo finetune FOLDER`` uses: :func:`kzoo.recipes.zoo.default_recipe` (read
    when ``kzoo finetune --help`` shows them; no TensorFlow needed)."""
    from kzoo.models.registry import get_spec
    from kzoo.recipes.zoo import DEFAULT_BACKBONE, default_recipe

    recipe = default_recipe("FOLDER", DEFAULT_BACKBONE)
    side = (get_spec(DEFAULT_BACKBONE).input_shape or (224,))[0]
    return {**recipe_values(recipe), "backbone": DEFAULT_BACKBONE,
            "weights": recipe.model_options.get("weights"),
            "image_size": f"the backbone's input side, {side} for {DEFAULT_BACKBONE}"}


def _lr_find_steps() -> int:
    from kzoo.training.lr_find import lr_find

    return parameter_default(lr_find, "steps")


def _add_train(commands) -> None:
    training = commands.add_parser("train", help="train a recipe (a name or a YAML path)")
    training.add_argument("recipe", help="a recipe name from `kzoo list --recipes`, or a YAML path")
    add_fields(training, TRAIN_FIELDS, "the recipe's")
    training.add_argument("--dropout", type=fraction, metavar="F",
                          help="the model's dropout rate (default: the recipe's)")
    add_loudness(training)
    add_data_dir(training)
    add_run_dir(training, "runs/RECIPE-TIME")
    add_resume(training)
    add_cluster(training)
    training.set_defaults(run=_train)


def _add_finetune(commands) -> None:
    tuning = commands.add_parser(
        "finetune", help="fine-tune a pretrained backbone on a folder of images",
        description="Fine-tune an ImageNet backbone on FOLDER: train/ and val/ (or "
        "validation/) folders of class folders, or the class folders directly. Phase one "
        "trains a new head on the frozen backbone, phase two its top layers. The defaults "
        "shown are those of a bare `kzoo finetune FOLDER`; with --recipe, the recipe's.")
    tuning.add_argument("folder", nargs="?", help="the image folder (default: the recipe's dataset)")
    tuning.add_argument("--recipe", help="settings from a recipe, e.g. mobilenet_v2_ants_bees")

    def default(name: str):
        return lambda: finetune_defaults()[name]

    add_model(tuning, default("backbone"), default("weights"))
    add_image_size(tuning, default("image_size"))
    phases = tuning.add_argument_group(
        "the two phases", "the new head on the frozen backbone, then the backbone's top layers")
    add_fields(phases, ("head_epochs", "head_learning_rate", "epochs", "learning_rate",
                        "unfreeze", "discriminative_lr", "feature_views"), finetune_defaults)
    phases.add_argument("--no-cache-features", dest="cache_features", action="store_const",
                        const=False, default=argparse.SUPPRESS,
                        help="run the backbone every head epoch instead of training the head on "
                        "its cached features (default: cached where faster)")
    phases.add_argument("--keep-last", dest="keep_best", action="store_const", const=False,
                        default=argparse.SUPPRESS,
                        help="end each phase with its last epoch, not its best validation epoch")
    add_fields(tuning, ("batch_size", "augmentation", "center_crop", "class_weight",
                        "validation_split", "precision", "tta", "seed"), finetune_defaults)
    add_loudness(tuning)
    add_data_dir(tuning)
    add_run_dir(tuning, "runs/finetune-FOLDER-TIME")
    add_cluster(tuning)
    tuning.set_defaults(run=_finetune)


def _add_lr_find(commands) -> None:
    finding = commands.add_parser(
        "lr-find", help="the learning-rate finder: loss against an exponentially growing rate",
        description="Train a few hundred steps while the learning rate grows from 1e-7 to 10, "
        "stop when the loss diverges, plot loss against rate into the run directory, and "
        "suggest a rate (a tenth of the rate of the lowest smoothed loss). TARGET is a recipe, "
        "or an image folder: then the fine-tuning phase's rate, after the head phase, with "
        "`kzoo finetune`'s defaults and its --backbone, --weights, --image-size and "
        "--model-option.")
    finding.add_argument("target", help="a recipe name or YAML path, or an image folder")
    add(finding, "--steps", type=count, metavar="N", default=argparse.SUPPRESS,
        shown=_lr_find_steps, help="steps of the sweep")
    add_fields(finding, LR_FIND_FIELDS, "the recipe's")
    add_model(finding, lambda: finetune_defaults()["backbone"],
              lambda: finetune_defaults()["weights"])
    add_image_size(finding, lambda: finetune_defaults()["image_size"])
    add_loudness(finding)
    add_data_dir(finding)
    add_run_dir(finding, "runs/lr-find-NAME-TIME")
    finding.set_defaults(run=_lr_find)


def add_commands(commands) -> None:
    _add_train(commands)
    _add_finetune(commands)
    _add_lr_find(commands)
