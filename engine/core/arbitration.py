"""Arbitration: weigh propensity against business value and pick the actions.

priority = propensity x value x lever. With ``one_per_category`` at most one action of
each offer category is returned.

The policy fills the slots one after another. Greedy (the default) takes the highest
priority left; ties keep catalog order (a stable sort), so the same inputs always give
the same answer, and every action had probability 1 of being chosen. Exploring policies
draw each slot at random among the candidates left:

- ``epsilon``: the greedy choice with probability 1 - epsilon, else one at random
  (each candidate left then has epsilon / n);
- ``softmax``: probability proportional to exp(priority / (temperature x best priority));
- ``thompson``: the share of ``draws`` Thompson samples of the priorities (the online
  layer's posteriors, adaptive.py: a new offer's ramp keeps it out of some) in which each
  is the best, mixed with a ``floor`` spread evenly over the candidates. The choice is drawn
  from that mixture, so the probability logged is exactly the one the choice had (given the
  samples, which are independent of the reward: inverse-propensity estimates stay unbiased),
  and no candidate has less than floor / n. ``sd_scale`` narrows the samples (0.5: half
  the posterior's width). The first slot is drawn so; the slots after it
  follow the posterior means (probability 1 given the slots before them).

Offers ``first`` (still showing from an earlier decision, contact_policy.showing) take the
first slots, best first, with probability 1: the policy shows them again whatever it
would draw. The policy fills the slots left.

Each action carries the probability the policy had of choosing it for its slot, given the
slots before it: what off-policy evaluation needs.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Policy = Literal["greedy", "epsilon", "softmax", "thompson"]
# Defaults of the exploring policies, for the catalog and `arbiter simulate` alike:
# softmax at 0.1 explores among near-best offers (docs/architecture.md, the simulation).
DEFAULT_EPSILON = 0.1
DEFAULT_TEMPERATURE = 0.1
# Thompson sampling: samples a decision, the share of each slot spread evenly, and the
# posterior's width it samples at (Chapelle and Li 2011 found half the width better in
# display advertising; so did the simulation: +0.6 points on days 2-3, docs/simulation.md).
DEFAULT_DRAWS = 32
DEFAULT_FLOOR = 0.005
DEFAULT_SD_SCALE = 0.5


@dataclass(frozen=True, slots=True)
class Ranked:
    index: int  # position in the candidate list
    rank: int  # 1-based
    priority: float
    probability: float


@dataclass(frozen=True)
class Exploration:
    policy: Policy = "greedy"
    epsilon: float = DEFAULT_EPSILON
    temperature: float = DEFAULT_TEMPERATURE
    draws: int = DEFAULT_DRAWS
    floor: float = DEFAULT_FLOOR
    sd_scale: float = DEFAULT_SD_SCALE
    off_placements: frozenset[str] = field(default_factory=frozenset)
    off_channels: frozenset[str] = field(default_factory=frozenset)

    def applies(self, channel: str, placement: str) -> bool:
        return (
            self.policy != "greedy"
            and channel not in self.off_channels
            and placement not in self.off_placements
        )


GREEDY = Exploration()


def priorities(propensity: np.ndarray, value: np.ndarray, lever: np.ndarray | float) -> np.ndarray:
    return np.asarray(propensity * value * lever)


def slot_probabilities(
    priority: np.ndarray, exploration: Exploration, draws: np.ndarray | None = None
) -> np.ndarray:
    """Probability of each remaining candidate for the next slot (greedy: 1 for the first
    highest priority). Thompson sampling needs ``draws`` (samples x candidates); without
    them (off-policy evaluation of a batch model alone) it is greedy with the floor."""
    n = priority.shape[0]
    if exploration.policy == "thompson":
        if draws is None:
            best = np.zeros(n)
            best[int(np.argmax(priority))] = 1.0
            return np.asarray((1.0 - exploration.floor) * best + exploration.floor / n)
        return _thompson_probabilities(priority, draws, np.ones(n, dtype=bool), exploration.floor)
    if exploration.policy == "greedy":
        p = np.zeros(n)
        p[int(np.argmax(priority))] = 1.0
        return p
    if exploration.policy == "epsilon":
        p = np.full(n, exploration.epsilon / n)
        p[int(np.argmax(priority))] += 1.0 - exploration.epsilon
        return p
    scale = max(float(priority.max()), 1e-12) * exploration.temperature
    weights = np.exp((priority - priority.max()) / scale)
    return np.asarray(weights / weights.sum())


def arbitrate(
    priority: np.ndarray,
    categories: Sequence[str],
    limit: int,
    *,
    one_per_category: bool = True,
    exploration: Exploration = GREEDY,
    rng: np.random.Generator | None = None,
    first: Collection[int] = (),
    draws: np.ndarray | None = None,
) -> list[Ranked]:
    """Up to ``limit`` candidates: those in ``first`` (indices), then the rest, best first
    (greedy) or drawn by the exploring policy (``draws``: Thompson samples of the
    priorities, samples x candidates)."""
    chosen: list[Ranked] = []
    taken: set[str] = set()

    def free(index: int) -> bool:
        return not (one_per_category and categories[index] in taken)

    def take(index: int, probability: float) -> None:
        chosen.append(Ranked(index, len(chosen) + 1, float(priority[index]), probability))
        taken.add(categories[index])

    pinned = set(first)
    for i in np.argsort(-priority, kind="stable").tolist() if first else ():
        if i in pinned and len(chosen) < limit and free(i):
            take(i, 1.0)
    if exploration.policy == "thompson" and draws is not None and rng is not None:
        n = priority.shape[0]
        open_ = np.array([i not in pinned and free(i) for i in range(n)]) if first else None
        for index, probability in _thompson_slots(
            priority, draws, np.ones(n, dtype=bool) if open_ is None else open_,
            categories if one_per_category else None, limit - len(chosen), exploration.floor, rng,
        ):  # fmt: skip
            take(index, probability)
        return chosen
    if exploration.policy == "greedy" or rng is None:
        for i in np.argsort(-priority, kind="stable").tolist():
            if len(chosen) == limit:
                break
            if i not in pinned and free(i):
                take(i, 1.0)
        return chosen
    left = np.array([i for i in range(priority.shape[0]) if i not in pinned and free(i)], int)
    while left.size and len(chosen) < limit:
        p = slot_probabilities(
            priority[left], exploration, None if draws is None else draws[:, left]
        )
        pick = _draw(p, rng)
        index = int(left[pick])
        take(index, float(p[pick]))
        left = np.array([i for i in left.tolist() if i != index and free(i)], int)
    return chosen


def _draw(p: np.ndarray, rng: np.random.Generator) -> int:
    """An index drawn with probabilities ``p`` (summing to 1): a quarter of the time of
    ``Generator.choice``, which checks its arguments on every call."""
    index = int(np.searchsorted(np.cumsum(p), rng.random(), side="right"))
    return min(index, int(p.shape[0]) - 1)


def _thompson_probabilities(
    priority: np.ndarray, draws: np.ndarray, open_: np.ndarray, floor: float
) -> np.ndarray:
    """Each candidate's probability for a slot among those ``open_``: the share of the
    samples in which it is the best open one, mixed with ``floor`` spread over them (a
    sample that ramped every open candidate out goes to the best mean)."""
    masked = draws if open_.all() else np.where(open_, draws, -np.inf)
    wins = masked.argmax(axis=1)
    blocked = np.isneginf(masked[np.arange(draws.shape[0]), wins])
    if blocked.any():
        wins[blocked] = int(np.where(open_, priority, -np.inf).argmax())
    p = (1.0 - floor) / draws.shape[0] * np.bincount(wins, minlength=open_.shape[0])
    p += floor / open_.sum() * open_
    return np.asarray(p)


def _thompson_slots(
    priority: np.ndarray,
    draws: np.ndarray,
    open_: np.ndarray,
    categories: Sequence[str] | None,
    slots: int,
    floor: float,
    rng: np.random.Generator,
) -> list[tuple[int, float]]:
    """Thompson sampling's slots over the candidates ``open_`` still may take: the first
    drawn as ``slot_probabilities`` gives it, the ones after it by the posterior means
    (each then had probability 1, given the slots before it). Off-policy evaluation is of
    the first slot; sampling each slot again cost ~25 us a slot."""
    if not open_.any() or slots < 1:
        return []
    p = _thompson_probabilities(priority, draws, open_, floor)
    index = _draw(p, rng)
    out = [(index, float(p[index]))]
    if slots == 1:
        return out
    taken = {categories[index]} if categories is not None else set()
    for i in np.argsort(-priority, kind="stable").tolist():
        if len(out) == slots:
            break
        if open_[i] and i != index and (categories is None or categories[i] not in taken):
            out.append((i, 1.0))
            if categories is not None:
                taken.add(categories[i])
    return out
