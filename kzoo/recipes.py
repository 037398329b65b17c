"""Recipes: one YAML file per experiment, loaded into a validated :class:`Recipe`.

A recipe names the model and its options, the dataset, the augmentation preset, the optimizer
(with an optional learning-rate schedule), the loss, batch size, epochs, seed, and the accuracy
it is expected to reach; a fine-tuning recipe adds a ``finetune:`` section (:class:`FineTune`),
and any recipe may add a ``search:`` section, where ``kzoo tune`` looks (:class:`SearchRange`).
Unknown keys and wrong types are errors naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kzoo.errors import KzooError

SCHEDULES = {
    # name: {option: (type, default)}
    "constant": {},
    "cosine": {},
    "exponential": {"decay_epochs": (float, 1.0), "decay_rate": (float, 0.9)},
    "step": {"every_epochs": (int, 5), "factor": (float, 0.5)},
    # linear from start x rate up to the rate at fraction peak of training, then down to end x rate
    "triangle": {"start": (float, 0.2), "peak": (float, 0.25), "end": (float, 0.05)},
}
OPTIMIZERS = ("sgd", "adam", "rmsprop")
SAMPLINGS = ("linear", "log", "reverse_log")


@dataclass(frozen=True)
class Optimizer:
    """The optimizer part of a recipe; ``schedule`` anneals the learning rate over training."""

    name: str = "adam"
    learning_rate: float = 1e-3
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0  # Keras's decoupled decay: each step w -= rate * weight_decay * w
    lr_multipliers: dict[str, float] = field(default_factory=dict)  # variable pattern: factor
    schedule: str = "constant"
    schedule_options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FineTune:
    """The ``finetune:`` section: transfer learning in two phases, as fastai's ``fine_tune``.

    Phase one trains the new head on the frozen backbone (in inference mode) for
    ``head_epochs`` at ``head_learning_rate``, on cached backbone features where that is faster
    (``cache_features``: ``auto``, ``true``, ``false``; ``feature_views`` copies of the
    training images are cached: the first plain, the others augmented). Phase two unfreezes the top ``unfreeze`` fraction of the
    backbone's layers (0: none, 1: all; BatchNorm layers stay frozen, in inference mode) and
    trains for the recipe's ``epochs`` with its ``optimizer``. With ``keep_best`` (the
    default) each phase ends with the weights of its best validation epoch, and phase two keeps
    phase one's model unless one of its epochs beats it.
    ``discriminative_lr`` < 1 gives lower layers lower learning rates, falling geometrically
    to that fraction of the rate at the lowest unfrozen layer; ``lr_multipliers`` maps
    variable-path patterns (``"block_16_*"``) to explicit multipliers. ``center_crop`` frames
    every image, in training and prediction alike: the central fraction of it that is kept,
    without distortion (0.875, the classic ImageNet framing), or ``null`` for the whole image,
    squashed to the input size.
    """

    head_epochs: int = 30
    head_learning_rate: float = 1e-3
    unfreeze: float = 0.15
    discriminative_lr: float = 1.0
    lr_multipliers: dict[str, float] = field(default_factory=dict)
    cache_features: bool | str = "auto"
    feature_views: int = 1
    center_crop: float | None = 0.875
    keep_best: bool = True


@dataclass(frozen=True)
class SearchRange:
    """One entry of the ``search:`` section: where ``kzoo tune`` looks for one hyperparameter.

    Either a range, ``min`` and ``max`` with an optional ``step`` and ``sampling`` (``linear``,
    ``log``: even on a log scale, ``reverse_log``), or a list of ``values``. In YAML::

        search:
          learning_rate: {min: 1.0e-4, max: 0.1, sampling: log}
          batch_size: {values: [32, 128, 2000]}
          dropout: {min: 0.0, max: 0.6, step: 0.1}
          momentum: false          # not searched: keep the recipe's value

    Fields left out (``None``) come from kzoo's default range for that hyperparameter, so
    ``learning_rate: {max: 1.0}`` only widens it (see :func:`kzoo.tuning.search_space`). With
    ``sampling: log`` a ``step`` multiplies (``{min: 16, max: 1024, step: 2}``: powers of two).
    """

    min: float | None = None
    max: float | None = None
    step: float | None = None
    sampling: str | None = None
    values: tuple[Any, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The YAML mapping of this entry, unset fields left out."""
        data = {key: getattr(self, key) for key in _SEARCH_KEYS if getattr(self, key) is not None}
        if "values" in data:
            data["values"] = list(data["values"])
        return data

    def validated(self, where: str) -> SearchRange:
        """This entry, checked for an empty or inverted range and a misfit step or sampling."""
        low, high, step, sampling = self.min, self.max, self.step, self.sampling
        if low is not None and high is not None and low >= high:
            problem = "empty" if low == high else "inverted"
            raise KzooError(
                f"{where}: the range min={low!r}, max={high!r} is {problem}; expected min < max "
                f"(to keep one value, write values: [{low!r}])"
            )
        if sampling is not None and sampling not in SAMPLINGS:
            raise KzooError(
                f"{where}: sampling {sampling!r} is unknown; expected one of {', '.join(SAMPLINGS)}"
            )
        logarithmic = sampling in ("log", "reverse_log")
        if logarithmic and low is not None and low <= 0:
            raise KzooError(
                f"{where}: sampling {sampling!r} needs min > 0, got min={low!r}; raise min or use "
                "sampling: linear"
            )
        if step is not None and (step <= 1 if logarithmic else step <= 0):
            expected = "> 1 (with log sampling a step multiplies)" if logarithmic else "> 0"
            raise KzooError(f"{where}: step={step!r}; expected {expected}")
        if step is not None and not logarithmic and None not in (low, high) and step > high - low:
            raise KzooError(
                f"{where}: step={step!r} is wider than the range {low!r}..{high!r}; expected a "
                "step <= max - min"
            )
        return self


@dataclass(frozen=True)
class Recipe:
    """Everything one training run needs."""

    name: str
    model: str
    dataset: str
    description: str = ""
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    augmentation: str = "none"
    optimizer: Optimizer = field(default_factory=Optimizer)
    loss: str = "sparse_categorical_crossentropy"
    batch_size: int = 128
    epochs: int = 10
    seed: int = 0
    validation_split: float = 0.1
    expected_accuracy: float | None = None
    reference: str = ""
    class_weight: str | None = None  # "balanced": weight each class by n / (classes * count)
    label_smoothing: float = 0.0
    precision: str = "float32"  # or auto, mixed_bfloat16, mixed_float16: see kzoo.precision
    steps_per_execution: int | str = "auto"  # "auto": see kzoo.flops.auto_steps_per_execution
    lookahead: int = 0  # > 0: every that many steps, pull the weights to their EMA (kzoo.callbacks)
    freeze_after: dict[str, int] = field(default_factory=dict)  # layer pattern: epochs trained
    tta: str = "none"  # test-time augmentation of the final evaluation: none, flip, flip+shift
    finetune: FineTune | None = None
    search: dict[str, SearchRange | None] = field(default_factory=dict)  # None: not searched

    def with_overrides(self, **overrides: Any) -> Recipe:
        """A copy with the given values changed; ``None`` values are ignored.

        ``learning_rate`` and ``dropout`` reach into the optimizer and the model options, the
        keys of :class:`FineTune` into the ``finetune`` section.
        """
        given = {key: value for key, value in overrides.items() if value is not None}
        recipe = self
        tuning = {key: given.pop(key) for key in list(given) if key in _FINETUNE_TYPES}
        if tuning:
            section = _parse_finetune({**dataclasses.asdict(self.finetune or FineTune()), **tuning},
                                      f"overrides of recipe {self.name!r}")
            recipe = dataclasses.replace(recipe, finetune=section)
        if "learning_rate" in given:
            rate = _check_value("learning_rate", given.pop("learning_rate"), float,
                                f"overrides of recipe {self.name!r}")
            optimizer = dataclasses.replace(self.optimizer, learning_rate=rate)
            recipe = dataclasses.replace(recipe, optimizer=optimizer)
        if "dropout" in given:
            kwargs = {**recipe.model_kwargs, "dropout": given.pop("dropout")}
            recipe = dataclasses.replace(recipe, model_kwargs=kwargs)
        _check_fields(given, source=f"overrides of recipe {self.name!r}")
        return dataclasses.replace(recipe, **given)

    def to_dict(self) -> dict[str, Any]:
        """The recipe as the YAML mapping it was read from (name excluded)."""
        data = dataclasses.asdict(self)
        data.pop("name")
        optimizer = data["optimizer"]
        schedule = {"name": optimizer.pop("schedule"), **optimizer.pop("schedule_options")}
        if schedule["name"] != "constant":
            optimizer["schedule"] = schedule
        data["search"] = {name: entry.to_dict() if entry is not None else False
                          for name, entry in self.search.items()} or None
        return {key: value for key, value in data.items() if value is not None}


_FIELD_TYPES = {
    "description": str,
    "model": str,
    "dataset": str,
    "model_kwargs": dict,
    "augmentation": str,
    "optimizer": dict,
    "loss": str,
    "batch_size": int,
    "epochs": int,
    "seed": int,
    "validation_split": float,
    "expected_accuracy": float,
    "reference": str,
    "class_weight": str,
    "label_smoothing": float,
    "precision": str,
    "steps_per_execution": int,  # or "auto"
    "lookahead": int,
    "freeze_after": dict,
    "tta": str,
    "finetune": dict,
    "search": dict,
}
_FINETUNE_TYPES = {
    "head_epochs": int,
    "head_learning_rate": float,
    "unfreeze": float,
    "discriminative_lr": float,
    "lr_multipliers": dict,
    "cache_features": bool,  # or "auto"
    "feature_views": int,
    "center_crop": float,  # or null
    "keep_best": bool,
}
_OPTIMIZER_TYPES = {"name": str, "learning_rate": float, "momentum": float, "nesterov": bool,
                    "weight_decay": float, "lr_multipliers": dict, "schedule": dict}
_RANGES = {  # key: (lowest, highest); None is unbounded
    "batch_size": (1, None),
    "epochs": (1, None),
    "seed": (0, None),
    "validation_split": (0.0, 0.9),
    "expected_accuracy": (0.0, 1.0),
    "momentum": (0.0, 1.0),
    "weight_decay": (0.0, None),
    "label_smoothing": (0.0, 0.99),
    "steps_per_execution": (1, None),
    "lookahead": (0, None),
    "head_epochs": (0, None),
    "unfreeze": (0.0, 1.0),
    "discriminative_lr": (0.0, 1.0),
    "feature_views": (1, None),
    "center_crop": (0.0, 1.0),
}
_POSITIVE = {"learning_rate", "head_learning_rate", "discriminative_lr", "center_crop"}


def _type_ok(value: Any, expected: type) -> bool:
    if isinstance(value, bool):
        return expected is bool
    if expected is float:
        return isinstance(value, (int, float))
    return isinstance(value, expected)


def _check_value(key: str, value: Any, expected: type, source: str) -> Any:
    if not _type_ok(value, expected):
        raise KzooError(
            f"{source}: key {key!r} must be {expected.__name__}, got {type(value).__name__} "
            f"{value!r}"
        )
    if key in _POSITIVE and value <= 0:
        raise KzooError(f"{source}: key {key!r} is {value!r}; expected > 0")
    low, high = _RANGES.get(key, (None, None))
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"between {low} and {high}"
        raise KzooError(f"{source}: key {key!r} is {value!r}; expected {bounds}")
    return float(value) if expected is float else value


def _unknown_key(key: str, allowed, source: str) -> KzooError:
    close = difflib.get_close_matches(key, list(allowed), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return KzooError(
        f"{source}: unknown key {key!r}{hint}; allowed keys: {', '.join(sorted(allowed))}"
    )


CLASS_WEIGHTS = ("balanced",)
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")  # as kzoo.precision
TTA_MODES = ("none", "flip", "flip+shift")  # as kzoo.tta


def _check_fields(data: dict[str, Any], source: str) -> dict[str, Any]:
    checked = {}
    for key, value in data.items():
        if key not in _FIELD_TYPES:
            raise _unknown_key(key, _FIELD_TYPES, source)
        if key == "class_weight" and value in (None, "none"):
            checked[key] = None
            continue
        if key == "steps_per_execution" and value == "auto":
            checked[key] = value
            continue
        checked[key] = _check_value(key, value, _FIELD_TYPES[key], source)
        if key == "class_weight" and value not in CLASS_WEIGHTS:
            raise KzooError(f"{source}: key 'class_weight' is {value!r}; expected "
                            f"{' or '.join(CLASS_WEIGHTS)} (or none)")
        for name, allowed in (("precision", PRECISIONS), ("tta", TTA_MODES)):
            if key == name and value not in allowed:
                raise KzooError(f"{source}: key {name!r} is {value!r}; expected one of "
                                f"{', '.join(allowed)}")
        if key == "freeze_after" and not all(
                isinstance(epochs, int) and not isinstance(epochs, bool) and epochs >= 0
                for epochs in value.values()):
            raise KzooError(f"{source}: key 'freeze_after' is {value!r}; expected a mapping of "
                            "layer-name patterns to epochs (integers >= 0)")
    return checked


def _parse_optimizer(data: dict[str, Any], source: str) -> Optimizer:
    values = {}
    for key, value in data.items():
        if key not in _OPTIMIZER_TYPES:
            raise _unknown_key(key, _OPTIMIZER_TYPES, f"{source} [optimizer]")
        values[key] = _check_value(key, value, _OPTIMIZER_TYPES[key], f"{source} [optimizer]")
    name = values.get("name", "adam")
    if name not in OPTIMIZERS:
        raise KzooError(
            f"{source}: optimizer name {name!r} is unknown; expected one of {', '.join(OPTIMIZERS)}"
        )
    schedule = dict(values.pop("schedule", {"name": "constant"}))
    schedule_name = schedule.pop("name", None)
    if schedule_name not in SCHEDULES:
        raise KzooError(
            f"{source}: optimizer schedule name {schedule_name!r} is unknown; expected one of "
            f"{', '.join(SCHEDULES)}"
        )
    options = {}
    for key, (kind, default) in SCHEDULES[schedule_name].items():
        options[key] = _check_value(key, schedule.pop(key, default), kind, f"{source} [schedule]")
        decays = key in ("decay_rate", "factor", "start", "end")  # at most the rate itself
        if options[key] <= 0 or (decays and options[key] > 1):
            expected = "in (0, 1]" if decays else "> 0"
            raise KzooError(
                f"{source} [schedule]: key {key!r} must be {expected}, got {options[key]!r}"
            )
    if schedule_name == "triangle" and not 0 < options["peak"] < 1:
        raise KzooError(f"{source} [schedule]: key 'peak' must be in (0, 1) (a fraction of "
                        f"training), got {options['peak']!r}")
    _check_multipliers(values, f"{source} [optimizer]")
    if schedule:
        raise _unknown_key(next(iter(schedule)), ["name", *SCHEDULES[schedule_name]],
                           f"{source} [schedule {schedule_name}]")
    return Optimizer(schedule=schedule_name, schedule_options=options, **values)


def _parse_finetune(data: dict[str, Any], source: str) -> FineTune:
    values = {}
    where = f"{source} [finetune]"
    for key, value in data.items():
        if key not in _FINETUNE_TYPES:
            raise _unknown_key(key, _FINETUNE_TYPES, where)
        checked = key == "cache_features" or (key == "center_crop" and value is None)
        values[key] = value if checked else _check_value(key, value, _FINETUNE_TYPES[key], where)
    if values.get("cache_features", "auto") not in (True, False, "auto"):
        raise KzooError(
            f"{where}: key 'cache_features' is {values['cache_features']!r}; expected true, "
            "false or auto"
        )
    _check_multipliers(values, where)
    return FineTune(**values)


def _check_multipliers(values: dict[str, Any], where: str) -> None:
    """``values["lr_multipliers"]`` checked, with its factors as floats."""
    for pattern, multiplier in values.get("lr_multipliers", {}).items():
        if not isinstance(pattern, str) or not _type_ok(multiplier, float) or multiplier < 0:
            raise KzooError(
                f"{where}: lr_multipliers entry {pattern!r}: {multiplier!r} is invalid; expected "
                "a variable-path pattern mapped to a number >= 0, e.g. {'block_1*': 0.1}"
            )
    if "lr_multipliers" in values:
        values["lr_multipliers"] = {k: float(v) for k, v in values["lr_multipliers"].items()}


_SEARCH_KEYS = ("min", "max", "step", "sampling", "values")


def _search_scalar(value: Any) -> Any:
    """A number written as ``1e-4`` reads as a string in YAML 1.1 (PyYAML); read it as a number."""
    if isinstance(value, str):
        for kind in (int, float):
            try:
                return kind(value)
            except ValueError:
                pass
    return value


def parse_search_entry(name: str, data: Any, source: str) -> SearchRange | None:
    """One ``search:`` entry, from YAML (a mapping, or ``false``: not searched), from Python (a
    :class:`SearchRange`) or from the command line (see :func:`parse_search_option`)."""
    where = f"{source} [search {name}]"
    if data is False or data is None or (isinstance(data, str) and data.lower() == "off"):
        return None
    if isinstance(data, SearchRange):
        data = data.to_dict()
    if isinstance(data, str):
        data = _search_text_to_mapping(data, where)
    if not isinstance(data, dict):
        raise KzooError(
            f"{where}: {data!r} is not a search entry; expected a mapping such as "
            "{min: 0.0001, max: 0.1, sampling: log} or {values: [32, 128]}, or false to keep the "
            "recipe's value"
        )
    for key in data:
        if key not in _SEARCH_KEYS:
            raise _unknown_key(key, _SEARCH_KEYS, where)
    if "values" in data:
        if len(data) > 1:
            raise KzooError(
                f"{where}: give either values or a range (min, max, step, sampling), not both "
                f"(got {', '.join(sorted(data))})"
            )
        values = data["values"]
        if not isinstance(values, (list, tuple)) or not values:
            raise KzooError(f"{where}: values {values!r} is empty; expected a non-empty list, "
                            "e.g. values: [32, 128, 2000]")
        values = tuple(_search_scalar(value) for value in values)
        kinds = {"number" if _type_ok(v, float) else type(v).__name__ for v in values}
        if len(kinds) > 1 or not kinds <= {"number", "str", "bool"}:
            raise KzooError(f"{where}: values {list(values)!r} mix kinds; expected all numbers, "
                            "all strings or all true/false")
        if len(set(values)) < len(values):
            raise KzooError(f"{where}: values {list(values)!r} repeat a value; list each once")
        return SearchRange(values=values)
    numbers = {}
    for key in ("min", "max", "step"):
        if key in data:
            value = _search_scalar(data[key])
            if not _type_ok(value, float):
                raise KzooError(f"{where}: {key} must be a number, got {data[key]!r}")
            numbers[key] = value
    sampling = data.get("sampling")
    return SearchRange(sampling=sampling, **numbers).validated(where)


def _search_text_to_mapping(text: str, where: str) -> dict[str, Any]:
    """``MIN:MAX[:STEP][:SAMPLING]`` or ``V1,V2,...`` as the mapping YAML would give."""
    parts = [part.strip() for part in text.split(":")]
    if len(parts) == 1:
        words = {"true": True, "false": False}
        return {"values": [words.get(value.strip().lower(), _search_scalar(value.strip()))
                           for value in text.split(",")]}
    if len(parts) > 4 or "" in parts[:2]:
        raise KzooError(
            f"{where}: {text!r} is not a range; expected MIN:MAX[:STEP][:SAMPLING] (e.g. "
            "1e-4:1e-1:log or 0:0.6:0.1), a list V1,V2,... or off"
        )
    data: dict[str, Any] = {"min": parts[0], "max": parts[1]}
    for part in parts[2:]:
        data["sampling" if part in SAMPLINGS else "step"] = part
    return data


def parse_search_option(text: str) -> tuple[str, SearchRange | None]:
    """A ``--search NAME=SPEC`` option: ``learning_rate=1e-4:1e-1:log``, ``dropout=0:0.6:0.1``,
    ``batch_size=32,128,2000`` or ``momentum=off`` (not searched)."""
    name, equals, spec = text.partition("=")
    if not equals or not name.strip() or not spec.strip():
        raise KzooError(
            f"--search {text!r} is not NAME=SPEC; expected e.g. learning_rate=1e-4:1e-1:log, "
            "batch_size=32,128,2000 or dropout=off"
        )
    return name.strip(), parse_search_entry(name.strip(), spec.strip(), "command line")


def _parse_search(data: dict[str, Any], source: str) -> dict[str, SearchRange | None]:
    for name in data:
        if not isinstance(name, str):
            raise KzooError(f"{source} [search]: {name!r} is not a hyperparameter name")
    return {name: parse_search_entry(name, entry, source) for name, entry in data.items()}


def recipe_from_dict(name: str, data: Any, source: str) -> Recipe:
    """Validate a mapping (as read from YAML) into a :class:`Recipe`."""
    if not isinstance(data, dict):
        raise KzooError(f"{source}: a recipe must be a YAML mapping, got {type(data).__name__}")
    values = _check_fields(data, source)
    for required in ("model", "dataset"):
        if required not in values:
            raise KzooError(f"{source}: required key {required!r} is missing")
    if "optimizer" in values:
        values["optimizer"] = _parse_optimizer(values["optimizer"], source)
    if "finetune" in values:
        values["finetune"] = _parse_finetune(values["finetune"], source)
    if "search" in values:
        values["search"] = _parse_search(values["search"], source)
    return Recipe(name=name, **values)


def recipe_dirs() -> list[Path]:
    """Where named recipes live: the source tree's ``zoo_configs/``, then the installed copy."""
    here = Path(__file__).resolve().parent
    return [here.parent / "zoo_configs", Path(sys.prefix) / "share" / "kzoo" / "zoo_configs"]


def list_recipes() -> list[str]:
    names = {path.stem for folder in recipe_dirs() if folder.is_dir() for path in folder.glob("*.yaml")}
    return sorted(names)


def load_recipe(name_or_path: str | Path | Recipe) -> Recipe:
    """A recipe by name (``zoo_configs/NAME.yaml``) or by path to a YAML file."""
    if isinstance(name_or_path, Recipe):
        return name_or_path
    path = Path(name_or_path)
    if not path.is_file():
        if path.suffix in (".yaml", ".yml") or len(path.parts) > 1:
            raise KzooError(f"recipe file {str(path)!r} does not exist")
        found = [folder / f"{path.name}.yaml" for folder in recipe_dirs()]
        path = next((candidate for candidate in found if candidate.is_file()), None)
        if path is None:
            close = difflib.get_close_matches(str(name_or_path), list_recipes(), n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
            raise KzooError(
                f"unknown recipe {str(name_or_path)!r}; {hint}(`kzoo list --recipes` shows all, "
                "or pass the path of a YAML file)"
            )
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise KzooError(f"{path}: not valid YAML: {error}") from error
    return recipe_from_dict(path.stem, data, source=str(path))


def save_recipe(recipe: Recipe, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
