"""The search space of ``kzoo tune``: which hyperparameters a search over a recipe may name,
kzoo's default ranges around the recipe's own values, and the recipe's ``search:`` section and
``--search`` flags on top. The search-range language itself (parsing, merging, the checks of a
range) is :mod:`kzoo.recipes.search`; what is checked here depends on the recipe and its model
(types, bounds, the recipe's own values inside the space).

>>> space = search_space(recipe, {"dropout": None}, train_size=54000)
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from kzoo.data.augment import PRESETS
from kzoo.errors import KzooError
from kzoo.models.registry import get_spec
from kzoo.recipes.recipe import Recipe
from kzoo.recipes.search import SearchRange

if TYPE_CHECKING:
    import keras_tuner as kt

DEFAULT_BATCH_SIZES = (16, 32, 64, 128, 256, 512, 1024, 2000)
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
    return recipe.model_options.get(name, get_spec(recipe.model).options[name])


def apply_values(recipe: Recipe, values: Mapping[str, Any]) -> Recipe:
    """``recipe`` with the hyperparameters in ``values`` set (Hyperband's ``tuner/`` values are
    left out)."""
    optimizer, model_options, fields = recipe.optimizer, dict(recipe.model_options), {}
    for name, value in values.items():
        if "/" in name:  # Hyperband's tuner/... and kzoo/settings: bookkeeping
            continue
        if name in ("learning_rate", "momentum"):
            optimizer = dataclasses.replace(optimizer, **{name: float(value)})
        elif name in _RECIPE_TUNABLES:
            fields[name] = value
        else:
            model_options[name] = value
    return dataclasses.replace(recipe, optimizer=optimizer, model_options=model_options, **fields)


def significant(value: float) -> float:
    return float(f"{value:.10g}")  # 0.30000000000000004 -> 0.3; any real precision is kept


def default_search(recipe: Recipe, train_size: int | None = None) -> dict[str, SearchRange]:
    """kzoo's default search around ``recipe``: the learning rate from a tenth to ten times the
    recipe's on a log scale, batch sizes from 16 to 2000 (those the training split can fill),
    and dropout from 0 to 0.6 in steps of 0.1 where the model has a dropout option."""
    rate = recipe.optimizer.learning_rate
    sizes = sorted({*DEFAULT_BATCH_SIZES, recipe.batch_size})
    fitting = tuple(size for size in sizes if not train_size or size <= train_size)
    space = {
        "learning_rate": SearchRange(min=significant(rate / 10), max=significant(rate * 10),
                                     sampling="log"),
        "batch_size": SearchRange(values=fitting),
    }
    if "dropout" in get_spec(recipe.model).options:
        space["dropout"] = SearchRange(min=0.0, max=max(0.6, recipe_value(recipe, "dropout")),
                                       step=0.1)
    return space


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
            merged[name] = None if entry is None else entry.over(merged.get(name))
    return [_checked(recipe, name, names[name], entry, train_size)
            for name, entry in merged.items() if entry is not None]


def _checked(recipe: Recipe, name: str, kind: type, entry: SearchRange,
             train_size: int | None) -> Tunable:
    where = f"recipe {recipe.name!r} [search {name}]"
    entry.validated(where, complete=True)  # the language's own checks, on the merged entry
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


def format_values(values: Mapping[str, Any]) -> str:
    shown = (f"{name}={value:.4g}" if isinstance(value, float) else f"{name}={value}"
             for name, value in values.items() if "/" not in name)
    return ", ".join(shown)



def format_space(space: Sequence[Tunable]) -> str:
    return "; ".join(
        f"{t.name} in {list(t.entry.values)}" if t.entry.values is not None else
        f"{t.name} in {t.entry.min:g}..{t.entry.max:g}"
        + (f" ({t.entry.sampling})" if t.entry.sampling not in (None, 'linear') else "")
        + (f" step {t.entry.step:g}" if t.entry.step is not None else "")
        for t in space
    )
