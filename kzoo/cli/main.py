"""The ``kzoo`` command: ``kzoo list``, ``kzoo info NAME``, ``kzoo train RECIPE``, ``kzoo tune
RECIPE`` and transfer learning: ``kzoo finetune FOLDER``, then ``kzoo predict``, ``kzoo
evaluate``, ``kzoo export``.

Each subcommand is a small function taking the parsed arguments; bad input is reported as one
line on stderr with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import json
import math
import os
import re
import sys
import threading
from pathlib import Path

from kzoo.errors import KzooError
from kzoo.recipes.recipe import PRECISIONS, TTA_MODES


def _list(args: argparse.Namespace) -> None:
    from kzoo.models.catalog import model_table
    from kzoo.models.registry import get_spec, list_models
    from kzoo.recipes.zoo import list_recipes, load_recipe

    if args.recipes:
        for name in list_recipes():
            recipe = load_recipe(name)
            if fnmatch.fnmatchcase(name, args.pattern):
                expected = f"{recipe.expected_accuracy:.1%}" if recipe.expected_accuracy else "-"
                print(f"{name:36} {recipe.model:22} {recipe.dataset:14} expected {expected}")
        return
    if args.format == "markdown":
        print(model_table())
        return
    names = list_models(args.pattern, tag=args.tag)
    if not names:
        raise KzooError(f"no model matches {args.pattern!r}" + (f" with tag {args.tag!r}" if args.tag else ""))
    for name in names:
        spec = get_spec(name)
        print(f"{name:22} {spec.summary:52} [{', '.join(spec.tags)}]")


def _info(args: argparse.Namespace) -> None:
    from kzoo.models.catalog import describe

    info = describe(args.name)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return
    print(f"{info['name']}: {info['description']}")
    print(f"  source:       {info['source']}")
    print(f"  input shape:  {info['input_shape']}   classes: {info['num_classes']}")
    print(f"  parameters:   {info['parameters']:,}")
    print(f"  tags:         {', '.join(info['tags'])}")
    print(f"  options:      {', '.join(f'{k}={v!r}' for k, v in info['options'].items())}")
    for recipe in info["recipes"]:
        expected = recipe["expected_accuracy"]
        shown = f"expected test accuracy {expected:.1%}" if expected else ""
        print(f"  recipe:       {recipe['recipe']} ({recipe['dataset']}) {shown}")


def _train(args: argparse.Namespace) -> None:
    _backend_for_processes(args)
    from kzoo.training.train import train

    train(
        args.recipe, epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
        dropout=args.dropout, class_weight=args.class_weight, seed=args.seed,
        precision=args.precision, tta=args.tta, steps_per_execution=args.steps_per_execution,
        data_dir=args.data_dir, run_dir=args.run_dir, resume=args.resume,
        verbose=_keras_verbosity(args), **_cluster(args),
    )


def _cluster(args: argparse.Namespace) -> dict:
    return {"coordinator": args.coordinator, "num_processes": args.num_processes,
            "process_id": args.process_id, "devices": args.devices}


def _backend_for_processes(args: argparse.Namespace) -> None:
    """Training across processes runs on Keras's JAX backend (the only one with a
    multi-machine path): choose it where the user has not chosen a backend."""
    from kzoo.training.distributed import Cluster

    cluster = Cluster.from_settings(**_cluster(args))
    if cluster.num_processes > 1 and "KERAS_BACKEND" not in os.environ:
        os.environ["KERAS_BACKEND"] = "jax"
        print(f"kzoo: training across {cluster.num_processes} processes on Keras's JAX backend")


def _keras_verbosity(args: argparse.Namespace) -> str | int:
    """Keras's ``verbose``: one line an epoch with ``--quiet``, progress bars otherwise."""
    return 2 if args.quiet else "auto"


def _rate(text: str) -> float:
    """A learning rate: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a valid rate; expected a finite "
                                         "number > 0, e.g. 0.001")
    return value


def _rate_or_auto(text: str) -> float | str:
    """A learning rate, or ``auto``: the learning-rate finder's suggestion."""
    return "auto" if text.strip().lower() == "auto" else _rate(text)


def _count(text: str) -> int:
    """A whole number >= 1 (a batch size, epochs)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not valid; expected a whole number >= 1")
    return value


def _steps(text: str) -> int | str:
    """``auto`` or a whole number >= 1."""
    return "auto" if text == "auto" else _count(text)


def _fraction(text: str) -> float:
    """A number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not valid; expected a number from 0 to 1")
    return value


def _weights(value: str) -> str | None:
    return None if value.lower() == "none" else value


def _crop(value: str) -> float | None:
    return None if value.lower() == "none" else float(value)


def _option(text: str) -> tuple[str, object]:
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE (e.g. alpha=0.35)")
    return key.strip(), yaml.safe_load(value)


def _finetune(args: argparse.Namespace) -> None:
    _backend_for_processes(args)
    from kzoo.training.finetune import FROM_RECIPE, fine_tune

    fine_tune(
        args.folder, recipe=args.recipe, backbone=args.backbone,
        weights=FROM_RECIPE if args.weights is False else args.weights,
        image_size=args.image_size, model_options=dict(args.option or []) or None,
        center_crop=FROM_RECIPE if args.center_crop is False else args.center_crop,
        epochs=args.epochs, head_epochs=args.head_epochs, learning_rate=args.lr,
        head_learning_rate=args.head_lr, batch_size=args.batch_size,
        augmentation=args.augmentation, unfreeze=args.unfreeze,
        discriminative_lr=args.discriminative_lr,
        cache_features=False if args.no_cache_features else None,
        class_weight=args.class_weight, keep_best=False if args.keep_last else None, seed=args.seed,
        validation_split=args.validation_split, precision=args.precision, tta=args.tta,
        data_dir=args.data_dir, run_dir=args.run_dir, verbose=2 if args.quiet else "auto",
        **_cluster(args),
    )


def _audit(args: argparse.Namespace) -> None:
    if args.labels:
        _audit_labels(args)
        return
    from kzoo.data.audit import audit, format_audit
    from kzoo.data.scan import scan_folder
    from kzoo.data.store import Framing
    from kzoo.files import write_json

    side = args.image_size
    framing = Framing((side, side), 3, args.center_crop)
    report = audit(scan_folder(args.folder, framing, progress=not args.quiet))
    output = Path(args.output)
    write_json(output, report)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(format_audit(report))
    for entry in report["duplicates"]["across_splits"][:10]:
        print(f"  duplicate across splits: {'  =  '.join(entry['files'])}")
    print(f"kzoo: audit written to {output}")


def _audit_labels(args: argparse.Namespace) -> None:
    from kzoo.analysis.labels import find_label_issues

    found = find_label_issues(
        args.folder, backbone=args.backbone, weights="imagenet" if args.weights is False
        else args.weights, image_size=args.image_size, center_crop=args.center_crop,
        model_options=dict(args.option or []) or None, folds=args.folds,
        seed=0 if args.seed is None else args.seed, data_dir=args.data_dir,
        run_dir=args.run_dir, progress=not args.quiet)
    print(f"kzoo: {len(found.issues)} of {found.images} images look mislabelled "
          f"(cross-validated accuracy {found.cross_validated_accuracy:.1%}); most confident first:")
    for issue in found.issues[:20]:
        print(f"  {issue.confidence:5.2f}  {issue.given} -> {issue.suggested}  {issue.path}")
    print(f"kzoo: all in {found.run_dir / 'label_issues.csv'}; thumbnails in "
          f"{found.run_dir / 'label_issues.html'}")


def _cache(args: argparse.Namespace) -> None:
    from kzoo.data.cache import cache_entries, cache_size, clear_cache
    from kzoo.data.locations import cache_dir

    if args.action == "clear":
        freed = clear_cache(args.folder)
        print(f"kzoo: freed {freed / 1e6:.1f} MB from {cache_dir()}")
        return
    for entry in cache_entries():
        print(entry["folder"])
        for store in entry["stores"]:
            print(f"  {store['split_framing']:40} {store['bytes'] / 1e6:10.1f} MB  {store['key']}")
    print(f"{cache_dir()}: {cache_size() / 1e6:.1f} MB in all")


def _print_predictions(results, output_format: str, top_k: int) -> None:
    if output_format == "json":
        print(json.dumps([r.to_dict() for r in results], indent=2))
        return
    if output_format == "csv":
        writer = csv.writer(sys.stdout)
        header = ["path"]
        for rank in range(1, top_k + 1):
            header += [f"class_{rank}", f"probability_{rank}"]
        writer.writerow(header + ["error"])
        for result in results:
            cells = [cell for name, p in result.top for cell in (name, f"{p:.6f}")]
            cells += [""] * (2 * top_k - len(cells))
            writer.writerow([result.path, *cells, result.error or ""])
        return
    width = max([len(r.path) for r in results] + [4])
    print(f"{'file':{width}}  predictions")
    for result in results:
        shown = ("unreadable: " + result.error if result.error
                 else "  ".join(f"{name} {p:.3f}" for name, p in result.top))
        print(f"{result.path:{width}}  {shown}")


def _predict(args: argparse.Namespace) -> None:
    from kzoo.analysis.inference import predict

    results = predict(args.run_dir, args.images, top_k=args.top_k, tta=args.tta or "none")
    _print_predictions(results, args.format, args.top_k)
    failed = sum(1 for r in results if r.error)
    if failed:
        print(f"kzoo: {failed} of {len(results)} files could not be read (listed above)",
              file=sys.stderr)


def _lr_find(args: argparse.Namespace) -> None:
    from kzoo.training.train import lr_find

    options = {key: value for key, value in {
        "backbone": args.backbone, "image_size": args.image_size,
        "model_options": dict(args.option or []) or None}.items() if value is not None}
    if args.weights is not False:  # given, "none" included
        options["weights"] = args.weights
    if options and not Path(args.target).expanduser().is_dir():
        raise KzooError(f"--backbone, --weights, --image-size and --option apply to an image "
                        f"folder; {args.target!r} is a recipe")
    found = lr_find(args.target, steps=args.steps, batch_size=args.batch_size, seed=args.seed,
                    precision=args.precision, data_dir=args.data_dir, run_dir=args.run_dir,
                    verbose=_keras_verbosity(args), **options)
    print(f"kzoo: suggested learning rate {found['suggestion']:.3g}: {found['rule']} "
          f"({found['minimum']:.3g}); steepest descent at {found['steepest']:.3g}")
    print(f"kzoo: plot in {Path(found['run_dir']) / 'lr_find.png'}; train at it with --lr "
          f"{found['suggestion']:.3g}, or let --lr auto find it")


def _explain(args: argparse.Namespace) -> None:
    from kzoo.analysis.explain import explain

    results = explain(args.run_dir, args.images, output=args.output, top_k=args.top_k,
                      class_name=args.class_name)
    for image, png, error in results:
        print(f"{image}: {png}" if png else f"{image}: not explained ({error})")
    failed = sum(1 for _, png, _ in results if png is None)
    if failed:
        print(f"kzoo: {failed} of {len(results)} files could not be read (listed above)",
              file=sys.stderr)


def _evaluate(args: argparse.Namespace) -> None:
    import numpy as np

    from kzoo.analysis.evaluation import format_confusion_matrix, format_per_class
    from kzoo.analysis.inference import evaluate

    metrics = evaluate(args.run_dir, args.folder, tta=args.tta or "none")
    if args.json:
        print(json.dumps(metrics, indent=2))
        return
    print(f"accuracy {metrics['accuracy']:.4f}  loss {metrics['loss']:.4f}  "
          f"on {metrics['examples']} images of {metrics['folder']}")
    print(format_confusion_matrix(np.asarray(metrics["confusion_matrix"]), metrics["class_names"]))
    print(format_per_class(metrics["per_class"]))
    if metrics["skipped"]:
        from kzoo.data.images import Skipped, describe_skipped

        print(describe_skipped([Skipped(**s) for s in metrics["skipped"]], root=args.folder))


def _export(args: argparse.Namespace) -> None:
    from kzoo.analysis.inference import export

    print(export(args.run_dir, format=args.format, output=args.output))


def _tune(args: argparse.Namespace) -> None:
    from kzoo.recipes.search import parse_search_option
    from kzoo.tuning import tune

    tune(
        args.recipe, algorithm=args.algorithm, max_trials=args.max_trials, epochs=args.epochs,
        search=dict(parse_search_option(text) for text in args.search or []),
        directory=args.directory, project_name=args.project, overwrite=args.overwrite,
        retrain_best=args.retrain_best, seed=args.seed, data_dir=args.data_dir, chief=args.chief,
        worker=args.worker, tuner_id=args.tuner_id, max_failures=args.max_failures,
        worker_timeout=args.worker_timeout, precision=args.precision,
        verbose=_keras_verbosity(args),
    )


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line: ``kzoo: error: ...``, exit status 2."""

    def error(self, message: str):
        self.exit(2, f"kzoo: error: {self.prog}: {message} (see `{self.prog} --help`)\n")


def _add_common(parser: argparse.ArgumentParser, *, seed=False, data=False, run=False) -> None:
    """The flags every command that takes them spells alike."""
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument("--quiet", action="store_true",
                          help="one line per epoch, no progress bars")
    loudness.add_argument("--verbose", action="store_true",
                          help="also show TensorFlow's own log lines")
    if seed:
        parser.add_argument("--seed", type=int, help="random seed (default the recipe's)")
    if data:
        parser.add_argument("--data-dir", help="folder holding the data (mnist.npz, "
                            "cifar10/, image folders, weights/)")
    if run:
        parser.add_argument("--run-dir", help="where results go (default runs/RECIPE-TIME)")


def _add_precision(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--precision", choices=PRECISIONS,
                        help="compute in float32 or a mixed 16-bit policy (default the recipe's; "
                        "auto: bf16 on CPUs with native bf16, float16 on recent GPUs)")


def _add_cluster(parser: argparse.ArgumentParser) -> None:
    """Flags for training over several devices or processes (default: Keras's
    KERAS_DISTRIBUTION_* environment variables, which cluster launchers set)."""
    group = parser.add_argument_group(
        "several devices or machines", "one line per process, the same flags and recipe on "
        "each, --run-dir on storage they share (see README: Training on several machines)")
    group.add_argument("--coordinator", metavar="HOST:PORT",
                       help="process 0's address and a free port, the same on every process")
    group.add_argument("--num-processes", type=_count, metavar="N",
                       help="processes training together (JAX backend)")
    group.add_argument("--process-id", type=int, metavar="I", help="this process: 0 to N-1")
    group.add_argument("--devices", metavar="all|N",
                       help="local devices to train on (default one, or all for a process of "
                       "a cluster; on a CPU-only machine N splits the CPU, for trying a "
                       "multi-device run)")


def _add_backbone(parser, default: str, context: str = "", default_given: bool = False) -> None:
    """--backbone, --weights and --option, spelt alike wherever a pretrained model is chosen;
    ``default_given`` sets ``default`` as --backbone's value, else it is left to the recipe."""
    parser.add_argument("--backbone", default=default if default_given else None,
                        help=f"{context}a pretrained model (`kzoo list --tag pretrained`); "
                        f"default {default}")
    parser.add_argument("--weights", type=_weights, default=False,
                        help=f"{context}imagenet (default), none, or the path of a weights file")
    parser.add_argument("--option", type=_option, action="append", metavar="KEY=VALUE",
                        help=f"{context}a backbone option, e.g. --option alpha=0.35 (repeatable)")


def _add_tta(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tta", choices=TTA_MODES,
                        help="test-time augmentation: average over the image and its mirror "
                        "image (flip), and shifted copies (flip+shift)")


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kzoo", description="A Keras model zoo.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    listing = commands.add_parser("list", help="list models (or recipes)")
    listing.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'lenet*'")
    listing.add_argument("--tag", help="only models with this tag, e.g. pretrained")
    listing.add_argument("--recipes", action="store_true", help="list recipes instead of models")
    listing.add_argument("--format", choices=("text", "markdown"), default="text")
    listing.set_defaults(run=_list)

    info = commands.add_parser("info", help="describe one model")
    info.add_argument("name")
    info.add_argument("--json", action="store_true", help="print the spec as JSON")
    info.set_defaults(run=_info)

    training = commands.add_parser("train", help="train a recipe (a name or a YAML path)")
    training.add_argument("recipe", help="a recipe name from `kzoo list --recipes`, or a YAML path")
    training.add_argument("--epochs", type=_count)
    training.add_argument("--batch-size", type=_count)
    training.add_argument("--lr", type=_rate_or_auto, metavar="RATE|auto",
                          help="learning rate (auto: the learning-rate finder's suggestion)")
    training.add_argument("--dropout", type=_fraction, help="the model's dropout rate")
    training.add_argument("--class-weight", choices=("balanced", "none"),
                          help="balanced: weigh each class's loss by the inverse of its share")
    _add_precision(training)
    training.add_argument("--steps-per-execution", type=_steps, metavar="N|auto",
                          help="train steps per call into the compiled step (default the "
                          "recipe's; auto: more for models whose step is tiny)")
    _add_tta(training)
    _add_common(training, seed=True, data=True, run=True)
    training.add_argument("--resume", action="store_true",
                          help="continue an interrupted run (the latest one, or --run-dir)")
    _add_cluster(training)
    training.set_defaults(run=_train)

    tuning = commands.add_parser(
        "finetune", help="fine-tune a pretrained backbone on a folder of images",
        description="Fine-tune an ImageNet backbone on FOLDER: train/ and val/ (or "
        "validation/) folders of class folders, or the class folders directly. Phase one "
        "trains a new head on the frozen backbone, phase two its top layers.",
    )
    tuning.add_argument("folder", nargs="?", help="the image folder (default: the recipe's dataset)")
    tuning.add_argument("--recipe", help="settings from a recipe, e.g. mobilenet_v2_ants_bees")
    _add_backbone(tuning, "resnet50")
    tuning.add_argument("--image-size", type=_count, help="input side in pixels (default 224)")
    tuning.add_argument("--center-crop", type=_crop, default=False, metavar="F",
                        help="keep the central fraction F of each image, undistorted (default "
                        "0.875), or none: the whole image, squashed")
    tuning.add_argument("--epochs", type=_count, help="fine-tuning epochs, after the head epochs")
    tuning.add_argument("--head-epochs", type=int, help="epochs of the head on the frozen backbone")
    tuning.add_argument("--lr", type=_rate_or_auto, metavar="RATE|auto",
                        help="fine-tuning learning rate (auto: the learning-rate finder's "
                        "suggestion, found after the head phase)")
    tuning.add_argument("--head-lr", type=_rate, help="learning rate of the head phase")
    tuning.add_argument("--batch-size", type=_count)
    tuning.add_argument("--augmentation", help="augmentation preset (imagenet, none, ...)")
    tuning.add_argument("--unfreeze", type=_fraction,
                        help="fraction of the backbone's layers to fine-tune, from the top (0-1)")
    tuning.add_argument("--discriminative-lr", type=float, metavar="F",
                        help="lower layers learn slower, down to F times the rate (0 < F <= 1)")
    tuning.add_argument("--no-cache-features", action="store_true",
                        help="run the backbone every head epoch instead of caching its features")
    tuning.add_argument("--class-weight", choices=("balanced", "none"),
                        help="balanced: weigh each class's loss by the inverse of its share")
    tuning.add_argument("--keep-last", action="store_true",
                        help="keep each phase's last epoch, not its best validation epoch")
    tuning.add_argument("--validation-split", type=_fraction,
                        help="fraction held out when FOLDER has no val/ folder")
    _add_precision(tuning)
    _add_tta(tuning)
    _add_common(tuning, seed=True, data=True, run=True)
    _add_cluster(tuning)
    tuning.set_defaults(run=_finetune)

    auditing = commands.add_parser(
        "audit", help="check an image folder before training: counts, skips, duplicates",
        description="Scan FOLDER (decoding every image once, into the cache that training "
        "then reuses) and report images per class and split, the imbalance ratio, skipped "
        "files, byte-identical files within and across splits (leakage), sizes and modes.",
    )
    auditing.add_argument("folder", help="train/ val/ test/ folders of class folders, or class folders")
    auditing.add_argument("--image-size", type=_count, default=224,
                          help="side the images are cached at (default 224)")
    auditing.add_argument("--center-crop", type=_crop, default=0.875, metavar="F",
                          help="framing the images are cached at (default 0.875, as finetune)")
    auditing.add_argument("--output", default="audit.json", help="where to write the report")
    auditing.add_argument("--json", action="store_true", help="print the report as JSON")
    labels = auditing.add_argument_group(
        "likely label errors (--labels)", "k-fold cross-validation of a linear head on a "
        "pretrained backbone's features, ranked by confident learning")
    labels.add_argument("--labels", action="store_true",
                        help="find likely label errors: writes label_issues.csv and "
                        "label_issues.html into --run-dir")
    _add_backbone(labels, "mobilenet_v2", default_given=True)
    labels.add_argument("--folds", type=_count, default=5, help="cross-validation folds (5)")
    _add_common(auditing, seed=True, data=True, run=True)
    auditing.set_defaults(run=_audit)

    caching = commands.add_parser("cache", help="show or free kzoo's cache of decoded images")
    caching.add_argument("action", choices=("list", "clear"))
    caching.add_argument("folder", nargs="?", help="with clear: only this image folder's cache")
    caching.set_defaults(run=_cache)

    predicting = commands.add_parser("predict", help="classify images with a trained run")
    predicting.add_argument("run_dir", help="a run directory (or a .keras file)")
    predicting.add_argument("images", nargs="+", help="image files or folders")
    predicting.add_argument("--top-k", type=_count, default=3, help="classes shown per image")
    predicting.add_argument("--format", choices=("table", "json", "csv"), default="table")
    _add_tta(predicting)
    _add_common(predicting)
    predicting.set_defaults(run=_predict)

    finding = commands.add_parser(
        "lr-find", help="the learning-rate finder: loss against an exponentially growing rate",
        description="Train a few hundred steps while the learning rate grows from 1e-7 to 10, "
        "stop when the loss diverges, plot loss against rate into the run directory, and "
        "suggest a rate (a tenth of the rate of the lowest smoothed loss). TARGET is a recipe, "
        "or an image folder: then the fine-tuning phase's rate, after the head phase.")
    finding.add_argument("target", help="a recipe name or YAML path, or an image folder")
    finding.add_argument("--steps", type=_count, default=200, help="steps of the sweep (200)")
    finding.add_argument("--batch-size", type=_count)
    _add_backbone(finding, "resnet50", "for a folder: ")
    finding.add_argument("--image-size", type=_count, help="for a folder: input side in pixels")
    _add_precision(finding)
    _add_common(finding, seed=True, data=True, run=True)
    finding.set_defaults(run=_lr_find)

    explaining = commands.add_parser(
        "explain", help="Grad-CAM heatmaps: where the model looked in each image",
        description="One PNG per image (the image, the Grad-CAM heatmap over it, the top "
        "classes), written into RUN/explain/ (or --output).")
    explaining.add_argument("run_dir", help="a run directory (or a .keras file)")
    explaining.add_argument("images", nargs="+", help="image files or folders")
    explaining.add_argument("--output", help="folder for the PNGs (default RUN/explain)")
    explaining.add_argument("--top-k", type=_count, default=3, help="classes named per image")
    explaining.add_argument("--class", dest="class_name", metavar="NAME",
                            help="explain this class (default: each image's most probable)")
    _add_common(explaining)
    explaining.set_defaults(run=_explain)

    evaluating = commands.add_parser("evaluate", help="evaluate a trained run on a labelled folder")
    evaluating.add_argument("run_dir", help="a run directory (or a .keras file)")
    evaluating.add_argument("folder", help="a folder of class folders named as the model's classes")
    evaluating.add_argument("--json", action="store_true", help="print the metrics as JSON")
    _add_tta(evaluating)
    _add_common(evaluating)
    evaluating.set_defaults(run=_evaluate)

    exporting = commands.add_parser("export", help="export a trained run's model")
    exporting.add_argument("run_dir", help="a run directory (or a .keras file)")
    exporting.add_argument("--format", choices=("keras", "saved_model", "tflite", "onnx"),
                           default="keras")
    exporting.add_argument("--output", help="where to write it (default RUN_DIR/export/)")
    _add_common(exporting)
    exporting.set_defaults(run=_export)

    searching = commands.add_parser(
        "tune", help="search a recipe's hyperparameters with KerasTuner",
        description="Search learning rate, batch size and dropout (by default) with KerasTuner, "
        "starting from the recipe's own values. Run the same command again to resume.",
    )
    searching.add_argument("recipe",
                           help="a recipe name from `kzoo list --recipes`, or a YAML path")
    searching.add_argument("--algorithm", choices=("random", "hyperband", "bayesian"),
                           default="random")
    searching.add_argument("--max-trials", type=_count, metavar="N",
                           help="trials to run (default 10; Hyperband: no cap)")
    searching.add_argument("--epochs", type=_count, metavar="N",
                           help="epochs a trial trains (Hyperband: the most); default the recipe's")
    searching.add_argument("--search", action="append", metavar="NAME=SPEC",
                           help="where to search NAME: MIN:MAX[:STEP][:log], V1,V2,... or off; "
                           "e.g. learning_rate=1e-4:1e-1:log (repeatable; overrides the recipe's "
                           "search section)")
    searching.add_argument("--directory", default="tuning", help="where searches live (default "
                           "tuning/)")
    searching.add_argument("--project", help="the search's folder name (default RECIPE-ALGORITHM)")
    searching.add_argument("--overwrite", action="store_true",
                           help="start afresh instead of resuming the search in its folder")
    searching.add_argument("--retrain-best", action="store_true",
                           help="then train the best settings on train+validation into a run dir")
    searching.add_argument("--max-failures", type=_count, default=3, metavar="N",
                           help="stop after N failed trials in a row (default 3)")
    _add_precision(searching)
    _add_common(searching, seed=True, data=True)
    role = searching.add_mutually_exclusive_group()
    role.add_argument("--chief", metavar="HOST:PORT",
                      help="serve the search to workers, listening on HOST:PORT")
    role.add_argument("--worker", metavar="HOST:PORT",
                      help="run trials for the chief at HOST:PORT")
    searching.add_argument("--worker-timeout", type=_rate, metavar="SECONDS",
                           help="give a silent worker's trial to another after SECONDS (default "
                           "3x the longest silence seen between a worker's reports, at least 60)")
    searching.add_argument("--tuner-id", help="a worker's name (default worker-HOST-PID); reuse "
                           "it when restarting a worker so it takes up its unfinished trial")
    searching.set_defaults(run=_tune)
    return parser


_NATIVE_LOG_LINE = re.compile(
    r"^([IWEF]\d{4} [\d:.]+ +\d+ \S+:\d+\]|WARNING: All log messages before absl)")


class NativeLogFilter:
    """Drops the log lines TensorFlow's C++ code writes straight to the stderr file (start-up
    notices, and an ``E0000 ... use_unbounded_threadpool`` line that means nothing to a user),
    which no setting of TensorFlow 2.21 turns off: stderr goes through a pipe, and a thread
    passes on every other line. :meth:`close` restores stderr and flushes what is left."""

    def __init__(self):
        sys.stderr.flush()
        self.saved = os.dup(2)
        read, write = os.pipe()
        os.dup2(write, 2)
        os.close(write)
        self.thread = threading.Thread(target=self._forward, args=(read, os.dup(self.saved)),
                                       daemon=True)
        self.thread.start()

    @staticmethod
    def _forward(read: int, write: int) -> None:
        with os.fdopen(read, "rb") as pipe, os.fdopen(write, "wb", 0) as out:
            for line in pipe:
                if not _NATIVE_LOG_LINE.match(line.decode("utf-8", "replace")):
                    out.write(line)

    def close(self) -> None:
        sys.stderr.flush()
        os.dup2(self.saved, 2)  # the pipe's last writer closes: the thread reads to the end
        os.close(self.saved)
        self.thread.join(timeout=5)


def main(argv: list[str] | None = None) -> int:
    try:
        args = make_parser().parse_args(argv)
    except SystemExit as done:  # --help, or a bad flag (one line on stderr already)
        return int(done.code or 0)
    native_logs = None if getattr(args, "verbose", False) else NativeLogFilter()
    try:
        args.run(args)
    except KzooError as error:
        print(f"kzoo: error: {error}", file=sys.stderr)
        from kzoo.training.distributed import joined, leave

        if joined():  # the cluster's shutdown at exit could only fail now: leave at once
            if native_logs is not None:
                native_logs.close()
            leave(2)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        if native_logs is not None:
            native_logs.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
