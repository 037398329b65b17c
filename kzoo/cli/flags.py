"""The flags of the ``kzoo`` commands, each defined once with one help text, and the readers of
their values.

A flag for a recipe field is made from the field (:func:`add_fields`): its name is the field's
with dashes (``batch_size``: ``--batch-size``), its help the field's ``help`` metadata in
:mod:`kzoo.recipes.recipe`, its value read as the field's type says. A flag left out is
absent from the parsed arguments (:func:`given` collects those given), so the Python call's
own default applies, and the help shows that default: each command says what it is, as a text
or as a function called only when the help is printed (fine-tuning's defaults live in modules
that import TensorFlow, which ``kzoo list`` should not wait for).

Flags that are no recipe field (``--run-dir``, ``--data-dir``, ``--quiet``, the cluster's,
``--backbone``...) are defined here once each and added by every command that takes them.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import inspect
import math
import textwrap
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kzoo.recipes.recipe import CLASS_WEIGHTS, PRECISIONS, TTA_MODES, FineTune, Optimizer, Recipe

# What a flag left out means, for the help: a text, or a function returning the value.
Default = Any


# --- values --------------------------------------------------------------------------------------


def rate(text: str) -> float:
    """A learning rate: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a valid rate; expected a finite "
                                         "number > 0, e.g. 0.001")
    return value


def rate_or_auto(text: str) -> float | str:
    """A learning rate, or ``auto``: the learning-rate finder's suggestion."""
    return "auto" if text.strip().lower() == "auto" else rate(text)


def count(text: str) -> int:
    """A whole number >= 1 (a batch size, epochs)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not valid; expected a whole number >= 1")
    return value


def whole(text: str) -> int:
    """A whole number >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not valid; expected a whole number >= 0")
    return value


def steps(text: str) -> int | str:
    """``auto`` or a whole number >= 1."""
    return "auto" if text == "auto" else count(text)


def fraction(text: str) -> float:
    """A number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not valid; expected a number from 0 to 1")
    return value


def share(text: str) -> float:
    """A number in (0, 1]."""
    value = fraction(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not valid; expected a number > 0 and <= 1")
    return value


def crop(text: str) -> float | None:
    """A fraction in (0, 1], or ``none``."""
    return None if text.lower() == "none" else share(text)


def weights(text: str) -> str | None:
    """``imagenet``, a file, or ``none`` (random initialisation)."""
    return None if text.lower() == "none" else text


def key_value(text: str) -> tuple[str, object]:
    """``KEY=VALUE``, the value read as YAML (``alpha=0.35`` gives 0.35, a float)."""
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE (e.g. alpha=0.35)")
    return key.strip(), yaml.safe_load(value)


# --- the parser and its help ---------------------------------------------------------------------


def shown(value: Any) -> str:
    """A default as the user would type it."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)


class HelpFormatter(argparse.HelpFormatter):
    """argparse's, with each flag's default after its help: the action's ``shown_default`` (a
    text, or a function called now), else its argparse default where it has one; lines are
    not broken at hyphens (``--run-dir`` stays whole)."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return textwrap.fill(" ".join(text.split()), width, initial_indent=indent,
                             subsequent_indent=indent, break_on_hyphens=False)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = getattr(action, "shown_default", None)
        if default is None and action.default not in (None, False, True, argparse.SUPPRESS):
            default = action.default
        if default is None or text == argparse.SUPPRESS:
            return text
        value = default() if callable(default) else default
        return f"{text} (default: {shown(value).replace('%', '%%')})"


class Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line: ``kzoo: error: ...``, exit status 2; an unknown
    flag is reported by the command given, with the closest of its flags (``kzoo train:
    unrecognized arguments: --sed 3; did you mean --seed?``)."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("formatter_class", HelpFormatter)
        self.flags: list[str] = []  # the flags shown in the help, as they are added
        self.commands = None
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"kzoo: error: {self.prog}: {message} (see `{self.prog} --help`)\n")

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        return self.remember(super().add_argument(*args, **kwargs))

    def add_argument_group(self, *args: Any, **kwargs: Any):
        return self.recording(super().add_argument_group(*args, **kwargs))

    def add_mutually_exclusive_group(self, **kwargs: Any):
        return self.recording(super().add_mutually_exclusive_group(**kwargs))

    def add_subparsers(self, **kwargs: Any):
        self.commands = super().add_subparsers(**kwargs)
        return self.commands

    def remember(self, action: argparse.Action) -> argparse.Action:
        if action.help != argparse.SUPPRESS:  # older spellings are read, not suggested
            self.flags.extend(action.option_strings)
        return action

    def recording(self, group):
        """``group``, its flags remembered as this parser's."""
        add_argument = group.add_argument
        group.add_argument = lambda *args, **kwargs: self.remember(add_argument(*args, **kwargs))
        return group

    def parse_args(self, args=None, namespace=None):
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            choices = self.commands.choices if self.commands is not None else {}
            command = choices.get(getattr(parsed, "command", None), self)
            command.error(unrecognized(extras, command.flags))
        return parsed


def unrecognized(extras: list[str], flags: list[str]) -> str:
    """argparse's "unrecognized arguments" message, with the closest of ``flags`` to each
    unknown flag among ``extras``."""
    close = {}
    for extra in extras:
        flag = extra.partition("=")[0]
        if flag.startswith("-"):
            close.update((flag, match) for match in difflib.get_close_matches(flag, flags, n=1))
    message = f"unrecognized arguments: {' '.join(extras)}"
    if len(close) == 1:
        return f"{message}; did you mean {next(iter(close.values()))}?"
    if close:
        return f"{message}; did you mean " + ", ".join(
            f"{match} for {flag}" for flag, match in close.items()) + "?"
    return message


def add(parser, *flags: str, shown: Default = None, **options: Any) -> argparse.Action:
    """``parser.add_argument``, with ``shown`` as the default the help shows."""
    action = parser.add_argument(*flags, **options)
    if shown is not None:
        action.shown_default = shown
    return action


def given(args: argparse.Namespace, names: Iterable[str]) -> dict[str, Any]:
    """The values of the flags given among ``names`` (those left out are absent)."""
    return {name: getattr(args, name) for name in names if hasattr(args, name)}


def parameter_default(function: Callable, name: str) -> Any:
    """The default of ``function``'s parameter ``name``: the one source of a command's
    default where the command leaves the value to the Python call."""
    return inspect.signature(function).parameters[name].default


# --- flags made from recipe fields ----------------------------------------------------------------

# How a field's value is read where its type says too little (a range, "auto", "none").
READERS = {
    "batch_size": (count, "N"), "epochs": (count, "N"), "head_epochs": (whole, "N"),
    "feature_views": (count, "N"), "seed": (int, "N"),
    "learning_rate": (rate_or_auto, "RATE|auto"), "head_learning_rate": (rate, "RATE"),
    "validation_split": (fraction, "F"), "unfreeze": (fraction, "F"),
    "discriminative_lr": (share, "F"), "center_crop": (crop, "F|none"),
    "steps_per_execution": (steps, "N|auto"), "augmentation": (str, "PRESET"),
}
CHOICES = {"class_weight": (*CLASS_WEIGHTS, "none"), "precision": PRECISIONS, "tta": TTA_MODES}
TYPES = {"int": int, "float": float, "str": str}
ALIASES = {"learning_rate": ("--lr",), "head_learning_rate": ("--head-lr",)}  # short, older


def recipe_field(name: str) -> dataclasses.Field:
    """The field ``name`` of :class:`Recipe`, its ``finetune:`` section or its optimizer."""
    for section in (Recipe, FineTune, Optimizer):
        for field in dataclasses.fields(section):
            if field.name == name:
                return field
    raise KeyError(f"no recipe field {name!r}")


def field_help(name: str) -> str:
    """The help text of a recipe field: its ``help`` metadata."""
    return recipe_field(name).metadata["help"]


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_fields(parser, names: Iterable[str], default: str | Callable[[], Mapping[str, Any]]):
    """A flag for each recipe field in ``names``, with the field's help; ``default`` is what a
    flag left out means: a text for all of them ("the recipe's"), or a function returning the
    values by field name, called only when the help is printed."""
    for name in names:
        field = recipe_field(name)
        reader, metavar = READERS.get(name, (TYPES.get(str(field.type), str), None))
        add(parser, flag_name(name), *ALIASES.get(name, ()), dest=name, type=reader,
            metavar=metavar, choices=CHOICES.get(name), default=argparse.SUPPRESS,
            shown=default if isinstance(default, str) else _lookup(default, name),
            help=field_help(name))


def _lookup(values: Callable[[], Mapping[str, Any]], name: str) -> Callable[[], Any]:
    return lambda: values()[name]


def recipe_values(recipe: Recipe) -> dict[str, Any]:
    """A recipe's values by flag field: its own, its learning rate and its ``finetune:``
    section's."""
    values = {field.name: getattr(recipe, field.name) for field in dataclasses.fields(recipe)}
    values["learning_rate"] = recipe.optimizer.learning_rate
    if recipe.finetune is not None:
        values.update((field.name, getattr(recipe.finetune, field.name))
                      for field in dataclasses.fields(recipe.finetune))
    return values


# --- flags every command that takes them spells alike -------------------------------------------


def add_loudness(parser) -> None:
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument("--quiet", action="store_true",
                          help="no progress bars: one line per epoch when training")
    loudness.add_argument("--verbose", action="store_true",
                          help="also show TensorFlow's own log lines")


def keras_verbosity(args: argparse.Namespace) -> str | int:
    """Keras's ``verbose``: one line an epoch with ``--quiet``, progress bars otherwise."""
    return 2 if args.quiet else "auto"


def add_data_dir(parser) -> None:
    parser.add_argument("--data-dir", metavar="DIR", help="folder holding the data (mnist.npz, cifar10/, image "
                        "folders, weights/)")


def add_run_dir(parser, shown: Default, hidden: tuple[str, ...] = ()) -> None:
    """``--run-dir``; ``hidden``: older spellings still read, not shown."""
    add(parser, "--run-dir", metavar="DIR", shown=shown, help="where the results go")
    for flag in hidden:
        parser.add_argument(flag, dest="run_dir", help=argparse.SUPPRESS)


def add_resume(parser) -> None:
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run (the latest one, or --run-dir)")


def add_output(parser, shown: Default, **options: Any) -> None:
    options.setdefault("metavar", "PATH")
    add(parser, "--output", shown=shown, help="where to write it", **options)


def add_format(parser, choices: tuple[str, ...], default: str) -> None:
    parser.add_argument("--format", choices=choices, default=default, help="the output's format")


def add_json(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def add_top_k(parser) -> None:
    parser.add_argument("--top-k", type=count, default=3, metavar="K",
                        help="classes shown per image")


def add_image_size(parser, shown: Default) -> None:
    add(parser, "--image-size", type=count, metavar="PIXELS", default=argparse.SUPPRESS,
        shown=shown, help="the side in pixels images are resized (and cached) to, the model's "
        "input")


def add_model(parser, backbone: Default, weights_default: Default) -> None:
    """``--backbone``, ``--weights`` and ``--model-option``: a pretrained model and its options
    (all absent where not given; ``--option`` is ``--model-option``'s older name)."""
    add(parser, "--backbone", default=argparse.SUPPRESS, shown=backbone,
        help="a pretrained model, from `kzoo list --tag pretrained`")
    add(parser, "--weights", type=weights, default=argparse.SUPPRESS, shown=weights_default,
        help="imagenet, none (random initial weights), or the path of a weights file")
    parser.add_argument("--model-option", "--option", dest="model_options", type=key_value,
                        action="append", metavar="KEY=VALUE",
                        help=f"{field_help('model_options')}: one KEY=VALUE each (repeatable, "
                        "e.g. --model-option alpha=0.35)")


def model_options(args: argparse.Namespace, *, image_size: bool = True) -> dict[str, Any]:
    """``--model-option`` values, with ``--weights`` (and ``--image-size``) where given."""
    options = dict(getattr(args, "model_options", None) or [])
    options.update(given(args, ["weights", *(["image_size"] if image_size else [])]))
    return options


def add_cluster(parser) -> None:
    """Flags for training over several devices or processes (default: Keras's
    KERAS_DISTRIBUTION_* environment variables, which cluster launchers set)."""
    group = parser.add_argument_group(
        "several devices or machines", "one line per process, the same flags and recipe on "
        "each, --run-dir on storage they share (see README: Training on several machines)")
    group.add_argument("--coordinator", metavar="HOST:PORT",
                       help="process 0's address and a free port, the same on every process")
    group.add_argument("--num-processes", type=count, metavar="N",
                       help="processes training together (JAX backend)")
    group.add_argument("--process-id", type=int, metavar="I", help="this process: 0 to N-1")
    group.add_argument("--devices", metavar="all|N",
                       help="local devices to train on (default one, or all for a process of "
                       "a cluster; on a CPU-only machine N splits the CPU, for trying a "
                       "multi-device run)")


def cluster(args: argparse.Namespace) -> dict[str, Any]:
    """The cluster flags, as ``distribution=`` takes them."""
    return {"coordinator": args.coordinator, "num_processes": args.num_processes,
            "process_id": args.process_id, "devices": args.devices}
