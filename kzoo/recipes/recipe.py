"""The :class:`Recipe` type, its sections and its validation."""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Any

from kzoo.errors import KzooError
from kzoo.recipes.checks import check_value, type_ok, unknown_key
from kzoo.recipes.search import SearchRange, parse_search

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



@dataclass(frozen=True)
class Optimizer:
    """The optimizer part of a recipe; ``schedule`` anneals the learning rate over training."""

    name: str = field(default="adam", metadata={"help": "the optimizer: sgd, adam or rmsprop"})
    learning_rate: float = field(default=1e-3, metadata={
        "help": "the learning rate (when fine-tuning: of the phase after the head phase); on "
                "the command line also auto: the learning-rate finder's suggestion"})
    momentum: float = field(default=0.0, metadata={"help": "SGD's and RMSprop's momentum"})
    nesterov: bool = field(default=False, metadata={"help": "SGD with Nesterov momentum"})
    weight_decay: float = field(default=0.0, metadata={
        "help": "Keras's decoupled weight decay: each step w -= rate * weight_decay * w"})
    lr_multipliers: dict[str, float] = field(default_factory=dict, metadata={
        "help": "learning-rate factors by variable-path pattern, e.g. {'block_1*': 0.1}"})
    schedule: str = field(default="constant", metadata={
        "help": "how the learning rate is annealed over training: constant, cosine, "
                "exponential, step or triangle"})
    schedule_options: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "the schedule's own options (decay_rate, every_epochs, peak, ...)"})

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

    head_epochs: int = field(default=30, metadata={
        "help": "epochs of the new head on the frozen backbone (phase one; 0: none)"})
    head_learning_rate: float = field(default=1e-3, metadata={
        "help": "the learning rate of the head phase"})
    unfreeze: float = field(default=0.15, metadata={
        "help": "the fraction of the backbone's layers fine-tuned in phase two, from the top "
                "(0: none, 1: all)"})
    discriminative_lr: float = field(default=1.0, metadata={
        "help": "in phase two, lower layers learn slower, down to this fraction of the rate "
                "at the lowest unfrozen layer (0 < F <= 1; 1: all alike)"})
    lr_multipliers: dict[str, float] = field(default_factory=dict, metadata={
        "help": "learning-rate factors by variable-path pattern, e.g. {'block_16_*': 0.5}"})
    cache_features: bool | str = field(default="auto", metadata={
        "help": "train the head on cached backbone features: auto (where faster), true or "
                "false (run the backbone every head epoch)"})
    feature_views: int = field(default=1, metadata={
        "help": "copies of the training images cached for the head phase: the first plain, "
                "the others augmented"})
    center_crop: float | None = field(default=0.875, metadata={
        "help": "the central fraction of each image kept, undistorted, in training and "
                "prediction alike; none: the whole image, squashed to the input size"})
    keep_best: bool = field(default=True, metadata={
        "help": "each phase ends with the weights of its best validation epoch (false: its "
                "last)"})

@dataclass(frozen=True)
class Recipe:
    """Everything one training run needs."""

    name: str = field(metadata={"help": "the recipe's name: its file name without .yaml"})
    model: str = field(metadata={"help": "the model to build, as `kzoo list` names it"})
    dataset: str = field(metadata={
        "help": "the data: a named dataset (mnist, cifar10, ...) or a folder of images"})
    description: str = field(default="", metadata={"help": "what the recipe trains, in a line"})
    model_options: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "options of the model's builder (weights, image_size, dropout, alpha, ...)"})
    augmentation: str = field(default="none", metadata={
        "help": "the augmentation preset: none, digits, cifar, imagenet or airbench"})
    optimizer: Optimizer = field(default_factory=Optimizer, metadata={
        "help": "the optimizer, its learning rate and its schedule"})
    loss: str = field(default="sparse_categorical_crossentropy", metadata={
        "help": "the loss, as Keras names it"})
    batch_size: int = field(default=128, metadata={"help": "images per training step"})
    epochs: int = field(default=10, metadata={
        "help": "epochs of training (when fine-tuning: of the phase after the head phase)"})
    seed: int = field(default=0, metadata={
        "help": "the random seed: the same seed, the same run"})
    validation_split: float = field(default=0.1, metadata={
        "help": "the fraction of the training images held out for validation where the data "
                "has no validation split"})
    expected_accuracy: float | None = field(default=None, metadata={
        "help": "the test accuracy the recipe reaches, as checked"})
    reference: str = field(default="", metadata={"help": "where the recipe comes from"})
    class_weight: str | None = field(default=None, metadata={
        "help": "balanced: weigh each class's loss by the inverse of its share, "
                "n / (classes * count); none: all alike"})
    label_smoothing: float = field(default=0.0, metadata={
        "help": "the share of each label spread over the other classes"})
    precision: str = field(default="float32", metadata={
        "help": "compute in float32 or a mixed 16-bit policy (auto: bf16 on CPUs with native "
                "bf16, float16 on recent GPUs)"})
    steps_per_execution: int | str = field(default="auto", metadata={
        "help": "train steps per call into the compiled step (auto: more for models whose "
                "step is tiny, kzoo.training.flops.auto_steps_per_execution)"})
    lookahead: int = field(default=0, metadata={
        "help": "> 0: every that many steps, pull the weights to their moving average"})
    freeze_after: dict[str, int] = field(default_factory=dict, metadata={
        "help": "layer-name patterns mapped to the epochs they train before being frozen"})
    tta: str = field(default="none", metadata={
        "help": "test-time augmentation (of a recipe's final evaluation): average the "
                "predictions over the image and its mirror image (flip), and shifted copies "
                "(flip+shift)"})
    finetune: FineTune | None = field(default=None, metadata={
        "help": "transfer learning in two phases (see FineTune)"})
    search: dict[str, SearchRange | None] = field(default_factory=dict, metadata={
        "help": "where `kzoo tune` searches each hyperparameter (none: not searched)"})

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
            rate = check_value("learning_rate", given.pop("learning_rate"), float,
                                f"overrides of recipe {self.name!r}")
            optimizer = dataclasses.replace(self.optimizer, learning_rate=rate)
            recipe = dataclasses.replace(recipe, optimizer=optimizer)
        if "dropout" in given:
            kwargs = {**recipe.model_options, "dropout": given.pop("dropout")}
            recipe = dataclasses.replace(recipe, model_options=kwargs)
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
    "model_options": dict,
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


CLASS_WEIGHTS = ("balanced",)
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")  # as kzoo.training.precision
TTA_MODES = ("none", "flip", "flip+shift")  # as kzoo.analysis.tta


def _check_fields(data: dict[str, Any], source: str) -> dict[str, Any]:
    checked = {}
    for key, value in data.items():
        if key not in _FIELD_TYPES:
            raise unknown_key(key, _FIELD_TYPES, source)
        if key == "class_weight" and value in (None, "none"):
            checked[key] = None
            continue
        if key == "steps_per_execution" and value == "auto":
            checked[key] = value
            continue
        checked[key] = check_value(key, value, _FIELD_TYPES[key], source)
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
            raise unknown_key(key, _OPTIMIZER_TYPES, f"{source} [optimizer]")
        values[key] = check_value(key, value, _OPTIMIZER_TYPES[key], f"{source} [optimizer]")
    name = values.get("name", "adam")
    if name not in OPTIMIZERS:
        raise KzooError(
            f"{source}: optimizer name {name!r} is unknown; expected one of {', '.join(OPTIMIZERS)}"
        )
    schedule = dict(values.pop("schedule", {"name": "constant"}))
    schedule_name = schedule.pop("name", None)
    if not isinstance(schedule_name, str) or schedule_name not in SCHEDULES:
        raise KzooError(
            f"{source}: optimizer schedule name {schedule_name!r} is unknown; expected one of "
            f"{', '.join(SCHEDULES)}"
        )
    options = {}
    for key, (kind, default) in SCHEDULES[schedule_name].items():
        options[key] = check_value(key, schedule.pop(key, default), kind, f"{source} [schedule]")
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
        raise unknown_key(next(iter(schedule)), ["name", *SCHEDULES[schedule_name]],
                           f"{source} [schedule {schedule_name}]")
    return Optimizer(schedule=schedule_name, schedule_options=options, **values)


def _parse_finetune(data: dict[str, Any], source: str) -> FineTune:
    values = {}
    where = f"{source} [finetune]"
    for key, value in data.items():
        if key not in _FINETUNE_TYPES:
            raise unknown_key(key, _FINETUNE_TYPES, where)
        checked = key == "cache_features" or (key == "center_crop" and value is None)
        values[key] = value if checked else check_value(key, value, _FINETUNE_TYPES[key], where)
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
        if not isinstance(pattern, str) or not type_ok(multiplier, float) or multiplier < 0:
            raise KzooError(
                f"{where}: lr_multipliers entry {pattern!r}: {multiplier!r} is invalid; expected "
                "a variable-path pattern mapped to a number >= 0, e.g. {'block_1*': 0.1}"
            )
    if "lr_multipliers" in values:
        values["lr_multipliers"] = {k: float(v) for k, v in values["lr_multipliers"].items()}




def recipe_from_dict(name: str, data: Any, source: str) -> Recipe:
    """Validate a mapping (as read from YAML) into a :class:`Recipe`."""
    if not isinstance(data, dict):
        raise KzooError(f"{source}: a recipe must be a YAML mapping, got {type(data).__name__}")
    if "model_kwargs" in data:  # the key's old name, still read
        if "model_options" in data:
            raise KzooError(f"{source}: give the model's options once, as 'model_options' "
                            "('model_kwargs' is its old name)")
        warnings.warn(f"{source}: 'model_kwargs' is now called 'model_options'; rename the key",
                      FutureWarning, stacklevel=2)
        data = {("model_options" if key == "model_kwargs" else key): value
                for key, value in data.items()}
    values = _check_fields(data, source)
    for required in ("model", "dataset"):
        if required not in values:
            raise KzooError(f"{source}: required key {required!r} is missing")
    if "optimizer" in values:
        values["optimizer"] = _parse_optimizer(values["optimizer"], source)
    if "finetune" in values:
        values["finetune"] = _parse_finetune(values["finetune"], source)
    if "search" in values:
        values["search"] = parse_search(values["search"], source)
    return Recipe(name=name, **values)


