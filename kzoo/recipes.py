"""Recipes: one YAML file per experiment, loaded into a validated :class:`Recipe`.

A recipe names the model and its options, the dataset, the augmentation preset, the optimizer
(with an optional learning-rate schedule), the loss, batch size, epochs, seed, and the accuracy
it is expected to reach; a fine-tuning recipe adds a ``finetune:`` section (:class:`FineTune`).
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
}
OPTIMIZERS = ("sgd", "adam", "rmsprop")


@dataclass(frozen=True)
class Optimizer:
    """The optimizer part of a recipe; ``schedule`` anneals the learning rate over training."""

    name: str = "adam"
    learning_rate: float = 1e-3
    momentum: float = 0.0
    schedule: str = "constant"
    schedule_options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FineTune:
    """The ``finetune:`` section: transfer learning in two phases, as fastai's ``fine_tune``.

    Phase one trains the new head on the frozen backbone (kept in inference mode) for
    ``head_epochs`` at ``head_learning_rate``, on cached backbone features where that is faster
    (``cache_features``: ``auto``, ``true``, ``false``; ``feature_views`` augmented copies of
    the training images are cached). Phase two unfreezes the top ``unfreeze`` fraction of the
    backbone's layers (0: none, 1: all; BatchNorm layers stay frozen unless
    ``train_batchnorm``) and trains for the recipe's ``epochs`` with its ``optimizer``.
    ``discriminative_lr`` < 1 gives lower layers lower learning rates, falling geometrically
    to that fraction of the rate at the lowest unfrozen layer; ``lr_multipliers`` maps
    variable-path patterns (``"block_16_*"``) to explicit multipliers.
    """

    head_epochs: int = 10
    head_learning_rate: float = 1e-3
    unfreeze: float = 0.3
    discriminative_lr: float = 1.0
    lr_multipliers: dict[str, float] = field(default_factory=dict)
    train_batchnorm: bool = False
    cache_features: bool | str = "auto"
    feature_views: int = 3


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
    finetune: FineTune | None = None

    def with_overrides(self, **overrides: Any) -> "Recipe":
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
            optimizer = dataclasses.replace(self.optimizer, learning_rate=given.pop("learning_rate"))
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
    "finetune": dict,
}
_FINETUNE_TYPES = {
    "head_epochs": int,
    "head_learning_rate": float,
    "unfreeze": float,
    "discriminative_lr": float,
    "lr_multipliers": dict,
    "train_batchnorm": bool,
    "cache_features": bool,  # or "auto"
    "feature_views": int,
}
_OPTIMIZER_TYPES = {"name": str, "learning_rate": float, "momentum": float, "schedule": dict}
_RANGES = {  # key: (lowest, highest); None is unbounded
    "batch_size": (1, None),
    "epochs": (1, None),
    "seed": (0, None),
    "validation_split": (0.0, 0.9),
    "expected_accuracy": (0.0, 1.0),
    "momentum": (0.0, 1.0),
    "head_epochs": (0, None),
    "unfreeze": (0.0, 1.0),
    "discriminative_lr": (0.0, 1.0),
    "feature_views": (1, None),
}
_POSITIVE = {"learning_rate", "head_learning_rate", "discriminative_lr"}


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


def _check_fields(data: dict[str, Any], source: str) -> dict[str, Any]:
    checked = {}
    for key, value in data.items():
        if key not in _FIELD_TYPES:
            raise _unknown_key(key, _FIELD_TYPES, source)
        checked[key] = _check_value(key, value, _FIELD_TYPES[key], source)
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
        if options[key] <= 0:
            raise KzooError(f"{source} [schedule]: key {key!r} must be > 0, got {options[key]!r}")
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
        checked = key == "cache_features"  # true, false or "auto": checked below
        values[key] = value if checked else _check_value(key, value, _FINETUNE_TYPES[key], where)
    if values.get("cache_features", "auto") not in (True, False, "auto"):
        raise KzooError(
            f"{where}: key 'cache_features' is {values['cache_features']!r}; expected true, "
            "false or auto"
        )
    for pattern, multiplier in values.get("lr_multipliers", {}).items():
        if not isinstance(pattern, str) or not _type_ok(multiplier, float) or multiplier < 0:
            raise KzooError(
                f"{where}: lr_multipliers entry {pattern!r}: {multiplier!r} is invalid; expected "
                "a variable-path pattern mapped to a number >= 0, e.g. {'block_1*': 0.1}"
            )
    if "lr_multipliers" in values:
        values["lr_multipliers"] = {k: float(v) for k, v in values["lr_multipliers"].items()}
    return FineTune(**values)


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
