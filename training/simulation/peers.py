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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from engine.core.catalog import Catalog
from engine.core.model_input import ServedInputs
from training.rows import TrainingRows
from training.simulation.oracle import propensity
from training.world import INTEREST_VIEW_SHARE, TOPICS, TRAVELLER_SHARE, World

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


class CeilingPolicy:
    """The best any policy can do on what it sees: it knows the hidden response model
    (training/world.py, with any appeal changed mid-run) but not the customer's hidden
    traits, and chooses the candidate of highest expected value given what is served.
    Its expectation is over the traits' distribution: price sensitivity uniform (a
    16-point midpoint rule), traveller or not, and the interest as the day's product
    views tell it (each view is of the interest with chance INTEREST_VIEW_SHARE, else of
    any topic). The oracle knows the traits; the distance between the two is what no
    learner can close, and a learner's share of this policy's value is its own gap."""

    name = "ceiling"
    _PRICE = (np.arange(16) + 0.5) / 16

    def __init__(self, catalog: Catalog, names: Sequence[str], world: World) -> None:
        self._names = list(names)
        self._world = world
        # the grid of hidden traits: interest x traveller x price sensitivity
        interest, traveller, price = np.meshgrid(
            np.arange(len(TOPICS)), [0.0, 1.0], self._PRICE, indexing="ij"
        )
        self._hidden = {
            "interest": interest.ravel(),
            "traveller": traveller.ravel(),
            "price_sensitivity": price.ravel(),
        }
        self._traveller_weight = np.where(
            self._hidden["traveller"] == 1.0, TRAVELLER_SHARE, 1.0 - TRAVELLER_SHARE
        ) / len(self._PRICE)
        self.offers(catalog)

    def offers(self, catalog: Catalog) -> None:
        self._offers = {o.offer_id: o for o in catalog.offers}

    def _interest(self, counts: Mapping[str, float]) -> np.ndarray:
        """P(interest = each topic | the day's views of each topic)."""
        other = (1.0 - INTEREST_VIEW_SHARE) / len(TOPICS)
        ratio = (INTEREST_VIEW_SHARE + other) / other
        seen = np.array([counts.get(t, 0.0) for t in TOPICS])
        odds = np.power(ratio, seen - seen.max())
        return np.asarray(odds / odds.sum())

    def expected(self, served: ServedInputs, candidates: Sequence[str]) -> dict[str, float]:
        """Each candidate's expected value (value x chance of a response) given what is
        served."""
        rows = self._hidden["interest"].shape[0]
        weight = self._interest(served.topic_counts)[self._hidden["interest"]]
        weight = weight * self._traveller_weight
        named = {
            n: np.full(rows, v) for n, v in zip(self._names, served.features.tolist(), strict=True)
        }
        out = {}
        for offer_id in candidates:
            offer = self._offers[offer_id]
            p = propensity(offer, served, named, self._hidden)
            chance = float(weight @ p) * self._world.appeal.get(offer_id, 1.0)
            out[offer_id] = chance * offer.value
        return out

    def choose(
        self, served: ServedInputs, candidates: Sequence[str], rng: np.random.Generator
    ) -> Choice:
        expected = self.expected(served, candidates)
        return Choice(max(candidates, key=expected.__getitem__), 1.0)

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


PEERS = ("vw", "ceiling", "value", "random")


def peers_by_name(
    names: Sequence[str],
    catalog: Catalog,
    feature_names: Sequence[str],
    world: World,
    *,
    vw_args: str,
    seed: int,
) -> dict[str, Peer]:
    """The peers among ``names`` (arbiter, the served policy, is not a peer)."""
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        raise ValueError(f"unknown peer policy {', '.join(unknown)} ({', '.join(PEERS)})")
    out: dict[str, Peer] = {}
    for n in names:
        if n == "ceiling":
            out[n] = CeilingPolicy(catalog, feature_names, world)
        elif n == "vw":
            out[n] = VWPolicy(catalog, feature_names, args=vw_args, seed=seed)
        elif n == "value":
            out[n] = ValuePolicy(catalog)
        elif n == "random":
            out[n] = RandomPolicy()
    return out
