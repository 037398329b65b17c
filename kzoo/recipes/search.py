"""The search-range language: ``search:`` entries of a recipe and ``--search`` options."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kzoo.errors import KzooError
from kzoo.recipes.checks import type_ok, unknown_key

SAMPLINGS = ("linear", "log", "reverse_log")


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

    def over(self, base: SearchRange | None) -> SearchRange:
        """This entry on top of ``base``: a range's unset fields come from a base range; a list
        of values, or a range over a list, replaces it."""
        if base is None or self.values is not None or base.values is not None:
            return self
        return SearchRange(**{key: getattr(self, key) if getattr(self, key) is not None
                              else getattr(base, key) for key in ("min", "max", "step", "sampling")})

    def validated(self, where: str, complete: bool = False) -> SearchRange:
        """This entry, checked for an empty or inverted range and a misfit step or sampling;
        with ``complete``, also that a range has both ends (once merged over the defaults)."""
        low, high, step, sampling = self.min, self.max, self.step, self.sampling
        if complete and self.values is None and (low is None or high is None):
            raise KzooError(f"{where}: a range needs both min and max, got {self.to_dict()}; "
                            "e.g. {min: 0.0001, max: 0.1}")
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
            raise unknown_key(key, _SEARCH_KEYS, where)
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
        kinds = {"number" if type_ok(v, float) else type(v).__name__ for v in values}
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
            if not type_ok(value, float):
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


def parse_search(data: dict[str, Any], source: str) -> dict[str, SearchRange | None]:
    for name in data:
        if not isinstance(name, str):
            raise KzooError(f"{source} [search]: {name!r} is not a hyperparameter name")
    return {name: parse_search_entry(name, entry, source) for name, entry in data.items()}


