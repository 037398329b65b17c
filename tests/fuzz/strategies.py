"""Shared pieces of the fuzz suites: hostile values, and the bound every property runs under.

Every property runs a fixed number of examples, derandomized, so the default test run is
bounded in time and the same cases run on every machine (a failure found once is found
again). ``KZOO_FUZZ_EXAMPLES`` scales the counts for a longer hunt:
``KZOO_FUZZ_EXAMPLES=20 pytest tests/fuzz`` tries twenty times as many.
"""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path

import yaml
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

SCALE = float(os.environ.get("KZOO_FUZZ_EXAMPLES", "1"))


def bounded(examples: int, **options) -> settings:
    """``examples`` cases (times ``KZOO_FUZZ_EXAMPLES``), no deadline, no example database
    written into the tree; in the default run derandomized and not shrunk (a failing case is
    reported as found, so a property recorded as failing costs no more time than one that
    passes), in a longer hunt random and shrunk to the smallest failing case."""
    hunt = SCALE != 1
    phases = [Phase.explicit, Phase.generate] + ([Phase.shrink] if hunt else [])
    return settings(max_examples=max(1, int(examples * SCALE)), deadline=None,
                    derandomize=not hunt, database=None, phases=phases,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture],
                    **options)


# Values a hand-edited YAML file or a typo can hold: wrong types, out of range, not finite, huge.
EDGE_NUMBERS = (0, -1, 1, 2**31, 2**63, 10**30, 10**400, 0.0, -0.0, 1e-320, 1e308,
                math.nan, math.inf, -math.inf)

hostile_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from(EDGE_NUMBERS),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["auto", "none", "null", "nan", "inf", "1e-3", "adam", "", " ", "\n",
                     "cosine", "balanced", "float32", "flip", "*", "../x", "é"]),
)

hostile_values = st.one_of(
    hostile_scalars,
    st.lists(hostile_scalars, max_size=3),
    st.dictionaries(st.one_of(st.text(max_size=6), st.integers(), st.none()), hostile_scalars,
                    max_size=3),
)


def one_line(message: str) -> bool:
    """A message a user reads on one line: non-empty and without a line break."""
    return bool(message.strip()) and "\n" not in message.strip()


# --- recipes: the shipped ones, mutated ----------------------------------------------------------

ZOO = Path(__file__).resolve().parents[2] / "zoo_configs"
SHIPPED = {path.stem: yaml.safe_load(path.read_text()) for path in sorted(ZOO.glob("*.yaml"))}
KEYS = sorted({key for data in SHIPPED.values() for key in data}
              | {"finetune", "freeze_after", "lookahead", "class_weight", "tta", "search"})
MINIMAL = {"model": "lenet5", "dataset": "mnist"}  # the least a recipe holds


def _paths(value, prefix=()):
    """Every path into a nested mapping, the mapping itself included."""
    yield prefix
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _paths(inner, (*prefix, key))


def _at(data, path):
    for key in path:
        data = data[key]
    return data


@st.composite
def mutated_recipes(draw):
    """A shipped recipe with one to four random edits: a value replaced, a key removed, an
    unknown or a misplaced key added, a value wrapped in a list or a mapping, a value moved to
    another key."""
    name = draw(st.sampled_from(sorted(SHIPPED)))
    data = copy.deepcopy(SHIPPED[name])
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(list(_paths(data))))
        edit = draw(st.sampled_from(["replace", "delete", "add", "wrap", "move"]))
        if not path:  # the whole recipe
            if edit == "wrap":
                data = draw(st.sampled_from([[data], {"recipe": data}]))
                break
            edit = "add"
        parent, key = (_at(data, path[:-1]), path[-1]) if path else (None, None)
        if edit == "replace":
            parent[key] = draw(hostile_values)
        elif edit == "delete":
            del parent[key]
        elif edit == "add":
            target = _at(data, path)
            target = target if isinstance(target, dict) else parent
            new_key = draw(st.one_of(st.sampled_from(KEYS), st.text(max_size=8), st.integers()))
            target[new_key] = draw(hostile_values)
        elif edit == "wrap":
            parent[key] = draw(st.sampled_from([[parent[key]], {"value": parent[key]}]))
        else:
            other = draw(st.sampled_from(sorted(data, key=str)))
            parent[key] = copy.deepcopy(data[other])
    return name, data


@st.composite
def recipe_files(draw):
    """The YAML text of a mutated recipe, itself damaged half the time (bytes cut, flipped,
    inserted)."""
    name, mapping = draw(mutated_recipes())
    try:
        text = yaml.safe_dump(mapping, allow_unicode=True).encode()
    except (yaml.YAMLError, ValueError, TypeError):
        text = b""
    if text and draw(st.booleans()):
        position = draw(st.integers(0, len(text) - 1))
        edit = draw(st.sampled_from(["cut", "flip", "insert"]))
        noise = draw(st.binary(min_size=1, max_size=4))
        text = {"cut": text[:position],
                "flip": text[:position] + bytes([text[position] ^ 0x80]) + text[position + 1:],
                "insert": text[:position] + noise + text[position:]}[edit]
    return name, text


def known_failure(value, key=None) -> bool:
    """Whether a case holds what the properties above already found: a key that is not a
    string, a schedule name that cannot be hashed, a number that is not finite."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        if key == "schedule" and isinstance(value.get("name"), (list, dict)):
            return True
        return any(not isinstance(k, str) or known_failure(v, k) for k, v in value.items())
    if isinstance(value, list):
        return any(known_failure(v) for v in value)
    return False


