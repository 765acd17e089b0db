"""Arbitration: weigh propensity against business value and pick the actions.

priority = propensity x value x lever. Ties keep catalog order (a stable sort), so the
same inputs always give the same answer. With ``one_per_category`` at most one action of
each offer category is returned. The policy is greedy: every returned action had
probability 1 of being chosen at its rank (exploration comes with the learning loop).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Ranked:
    index: int  # position in the candidate list
    rank: int  # 1-based
    priority: float
    probability: float


def priorities(propensity: np.ndarray, value: np.ndarray, lever: np.ndarray) -> np.ndarray:
    return np.asarray(propensity * value * lever)


def arbitrate(
    priority: np.ndarray,
    categories: Sequence[str],
    limit: int,
    *,
    one_per_category: bool = True,
) -> list[Ranked]:
    """The best ``limit`` candidates, best first."""
    order = np.argsort(-priority, kind="stable")
    chosen: list[Ranked] = []
    seen: set[str] = set()
    for i in order.tolist():
        if one_per_category:
            if categories[i] in seen:
                continue
            seen.add(categories[i])
        chosen.append(Ranked(i, len(chosen) + 1, float(priority[i]), 1.0))
        if len(chosen) == limit:
            break
    return chosen
