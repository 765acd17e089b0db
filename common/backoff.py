"""Exponential back-off with jitter, for whatever waits before trying a failed thing again
(the feature-store breaker, the hot connection's reconnects)."""

from __future__ import annotations

import random


def jittered(step: int, first: float, most: float) -> float:
    """Seconds to wait after the ``step``-th failure in a row (from 1): ``first``, doubled
    each step up to ``most``, drawn between half of that and all of it, so that the
    workers and replicas that failed together do not try again in step."""
    longest = min(most, first * 2.0 ** min(step - 1, 30))
    return longest * random.uniform(0.5, 1.0)
