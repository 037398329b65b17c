"""Shared pieces of the fuzz suites: hostile values, and the bound every property runs under.

Every property runs a fixed number of examples, derandomized, so the default test run is
bounded in time and the same cases run on every machine (a failure found once is found
again). ``KZOO_FUZZ_EXAMPLES`` scales the counts for a longer hunt:
``KZOO_FUZZ_EXAMPLES=20 pytest tests/fuzz`` tries twenty times as many.
"""

from __future__ import annotations

import math
import os

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
