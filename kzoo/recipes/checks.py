"""Checks shared by every part of a recipe: types, ranges and unknown keys, each a one-line error."""

from __future__ import annotations

import difflib
import math
from typing import Any

from kzoo.errors import KzooError

RANGES = {  # key: (lowest, highest); None is unbounded
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
POSITIVE = {"learning_rate", "head_learning_rate", "discriminative_lr", "center_crop"}


def type_ok(value: Any, expected: type) -> bool:
    """Whether ``value`` is of the ``expected`` type; a float must be finite (NaN and infinity
    are never a setting)."""
    if isinstance(value, bool):
        return expected is bool
    if expected is float:
        return isinstance(value, (int, float)) and math.isfinite(value)
    return isinstance(value, expected)


def check_value(key: str, value: Any, expected: type, source: str) -> Any:
    if not type_ok(value, expected):
        finite = " (a finite number)" if expected is float else ""
        raise KzooError(
            f"{source}: key {key!r} must be {expected.__name__}{finite}, got "
            f"{type(value).__name__} {value!r}"
        )
    if key in POSITIVE and value <= 0:
        raise KzooError(f"{source}: key {key!r} is {value!r}; expected > 0")
    low, high = RANGES.get(key, (None, None))
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"between {low} and {high}"
        raise KzooError(f"{source}: key {key!r} is {value!r}; expected {bounds}")
    return float(value) if expected is float else value


def unknown_key(key: Any, allowed, source: str) -> KzooError:
    close = difflib.get_close_matches(key, list(allowed), n=1) if isinstance(key, str) else []
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return KzooError(
        f"{source}: unknown key {key!r}{hint}; allowed keys: {', '.join(sorted(allowed))}"
    )
