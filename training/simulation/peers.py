"""Peer policies that choose among the same candidates Arbiter served from, in the same
simulated world: Vowpal Wabbit's contextual bandit (the learner behind Azure
Personalizer), learning online from its own choices, and the fixed value-only and
uniformly random baselines.

Each simulated decision gives every policy the candidates the service found eligible for
that customer, channel and moment (rules, stage, caps and cool-downs already applied),
and the hidden response model scores what each policy chose: the same customers, traffic
and days for all. The customer's answer to a peer's choice is drawn with the same uniform
number as to the others' (common random numbers: differences between policies are not
drawing noise).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from engine.core.catalog import Catalog
from engine.core.model_input import ServedInputs
from training.rows import TrainingRows

# VW's cb_explore_adf with the customer's features and the offer's as action-dependent
# features, their pairwise interactions, SquareCB exploration and coin-betting updates
# (no learning rate to tune). The strongest of 18 settings tried in the simulated world
# (docs/simulation.md): with VW's default updates it served 70-77% of the oracle's value,
# with --coin 86-93%; --vw-args overrides.
DEFAULT_VW_ARGS = "--cb_explore_adf --squarecb --coin -q SA -q TA -q CA --quiet"
_UNSAFE = re.compile(r"[\s|:]")


@dataclass(frozen=True)
class Choice:
    offer_id: str
    probability: float  # the policy's probability of this choice


class Peer(Protocol):
    name: str

    def choose(
        self, served: ServedInputs, candidates: Sequence[str], rng: np.random.Generator
    ) -> Choice: ...

    def learn(
        self, served: ServedInputs, candidates: Sequence[str], choice: Choice, value: float
    ) -> None: ...

    def offers(self, catalog: Catalog) -> None:
        """The catalog changed: its offers from now on (a new one among them)."""
        ...


class RandomPolicy:
    name = "random"

    def offers(self, catalog: Catalog) -> None:
        pass

    def choose(
        self, served: ServedInputs, candidates: Sequence[str], rng: np.random.Generator
    ) -> Choice:
        return Choice(candidates[int(rng.integers(len(candidates)))], 1.0 / len(candidates))

    def learn(
        self, served: ServedInputs, candidates: Sequence[str], choice: Choice, value: float
    ) -> None:
        pass


class ValuePolicy:
    """The offer worth most to the business (value x lever), whoever the customer is."""

    name = "value"

    def __init__(self, catalog: Catalog) -> None:
        self.offers(catalog)

    def offers(self, catalog: Catalog) -> None:
        self._worth = {o.offer_id: o.value * o.lever for o in catalog.offers}

    def choose(
        self, served: ServedInputs, candidates: Sequence[str], rng: np.random.Generator
    ) -> Choice:
        return Choice(max(candidates, key=self._worth.__getitem__), 1.0)

    def learn(
        self, served: ServedInputs, candidates: Sequence[str], choice: Choice, value: float
    ) -> None:
        pass


class VWPolicy:
    """Vowpal Wabbit ``--cb_explore_adf``: per decision a shared example (the customer
    as served: features, channel, stage, the latest category and the day's category
    counts) and one example per candidate (offer id, topics, value); the cost of the
    chosen offer is minus its value when accepted (scaled to [-1, 0]), so VW maximises the
    same value per decision the oracle and Arbiter are scored on. It learns after every
    decision (online), an advantage over Arbiter's daily retraining."""

    name = "vw"

    def __init__(
        self,
        catalog: Catalog,
        names: Sequence[str],
        *,
        args: str = DEFAULT_VW_ARGS,
        seed: int = 1,
    ) -> None:
        try:
            import vowpalwabbit  # only the comparison needs it
        except ImportError as e:
            raise ValueError(
                "the vw policy needs Vowpal Wabbit: pip install 'arbiter[simulation]'"
            ) from e

        self._vw = vowpalwabbit.Workspace(f"{args} --random_seed {seed}")
        self._names = [_token(n) for n in names]
        self._scale = max(o.value for o in catalog.offers) or 1.0
        self._actions: dict[str, str] = {}
        self.offers(catalog)

    def offers(self, catalog: Catalog) -> None:
        """Features for every offer of ``catalog`` (the scale stays the first catalog's)."""
        self._actions |= {
            o.offer_id: f"|A id={_token(o.offer_id)} "
            + " ".join(f"topic={_token(t)}" for t in o.topics)
            + f" value:{o.value / self._scale:.4f}"
            for o in catalog.offers
        }

    def _shared(self, served: ServedInputs) -> str:
        numbers = " ".join(
            f"{n}:{v:.6g}"
            for n, v in zip(self._names, served.features.tolist(), strict=True)
            if v and math.isfinite(v)
        )
        topics = " ".join(
            f"{_token(t)}:{c:.6g}" for t, c in served.topic_counts.items() if c and math.isfinite(c)
        )
        last = f" last={_token(served.last_category)}" if served.last_category else ""
        return (
            f"shared |S {numbers}{last} |T {topics}"
            f" |C channel={_token(served.channel)} stage={_token(served.stage)}"
        )

    def _example(self, served: ServedInputs, candidates: Sequence[str]) -> list[str]:
        return [self._shared(served), *(self._actions[c] for c in candidates)]

    def choose(
        self, served: ServedInputs, candidates: Sequence[str], rng: np.random.Generator
    ) -> Choice:
        pmf = np.asarray(self._vw.predict(self._example(served, candidates)), dtype=np.float64)
        pmf = pmf / pmf.sum()
        i = int(rng.choice(len(candidates), p=pmf))
        return Choice(candidates[i], float(pmf[i]))

    def learn(
        self, served: ServedInputs, candidates: Sequence[str], choice: Choice, value: float
    ) -> None:
        example = self._example(served, candidates)
        i = 1 + list(candidates).index(choice.offer_id)
        example[i] = f"0:{-value / self._scale:.6g}:{choice.probability:.6g} {example[i]}"
        self._vw.learn(example)

    def warm_start(self, rows: TrainingRows, catalog: Catalog) -> None:
        """Learns from the logs Arbiter's first model was trained on: each row's offer
        alone (VW's default cb_adf regression updates the chosen action only, weighted
        by the logged probability), so both start from the same data."""
        for served, offer_id, p, reward in zip(
            rows.served, rows.offer_ids, rows.probability, rows.reward, strict=True
        ):
            value = catalog.by_id[offer_id].value if reward else 0.0
            self.learn(served, [offer_id], Choice(offer_id, float(p)), value)

    def close(self) -> None:
        self._vw.finish()


def _token(text: str) -> str:
    return _UNSAFE.sub("_", text)


def peers_by_name(
    names: Sequence[str], catalog: Catalog, feature_names: Sequence[str], *, vw_args: str, seed: int
) -> dict[str, Peer]:
    """The peers among ``names`` (arbiter, the served policy, is not a peer)."""
    unknown = [n for n in names if n not in ("vw", "value", "random")]
    if unknown:
        raise ValueError(f"unknown peer policy {', '.join(unknown)} (vw, value, random)")
    out: dict[str, Peer] = {}
    for n in names:
        if n == "vw":
            out[n] = VWPolicy(catalog, feature_names, args=vw_args, seed=seed)
        elif n == "value":
            out[n] = ValuePolicy(catalog)
        elif n == "random":
            out[n] = RandomPolicy()
    return out
