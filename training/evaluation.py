"""Off-policy evaluation: what a new policy would have earned on the logged traffic.

From logs of decisions made by an exploring policy (each action with the probability the
policy had of choosing it), three standard estimators of a target policy's expected
reward per decision (first slot):

- IPS: mean of reward x target probability / logged probability (unbiased, noisy);
- SNIPS: the same, normalised by the mean weight (a little biased, far less noisy);
- DR (doubly robust): a reward model's prediction for the target's choice, corrected by
  the weighted error of that model on the logged action (unbiased if either is right).

Intervals are 95% normal approximations (for SNIPS by the delta method). Policies compared
here choose among the logged candidates: a model (priority = propensity x value x lever)
and value x lever alone, each with the exploration it would be deployed with, and uniform
random.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.core.arbitration import GREEDY, Exploration, slot_probabilities
from engine.core.catalog import Catalog
from engine.core.model_input import ServedInputs, build_matrix
from engine.core.schema import FeatureSchema
from engine.core.scoring import Scorer

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.value:.4f} [{self.low:.4f}, {self.high:.4f}]"


def mean_interval(terms: np.ndarray, value: float | None = None) -> Estimate:
    mean = float(terms.mean()) if value is None else value
    half = Z95 * float(terms.std(ddof=1)) / np.sqrt(terms.shape[0]) if terms.shape[0] > 1 else 0.0
    return Estimate(mean, mean - half, mean + half)


def ips(reward: np.ndarray, logged_p: np.ndarray, target_p: np.ndarray) -> Estimate:
    return mean_interval(reward * target_p / logged_p)


def snips(reward: np.ndarray, logged_p: np.ndarray, target_p: np.ndarray) -> Estimate:
    weight = target_p / logged_p
    if weight.sum() == 0:
        return Estimate(float("nan"), float("nan"), float("nan"))
    value = float((weight * reward).sum() / weight.sum())
    return mean_interval(weight * (reward - value) / weight.mean() + value, value)


def doubly_robust(
    reward: np.ndarray,
    logged_p: np.ndarray,
    target_p: np.ndarray,
    predicted_logged: np.ndarray,
    predicted_target: np.ndarray,
) -> Estimate:
    """``predicted_logged``: the reward model on the logged action; ``predicted_target``:
    its expected reward under the target policy (for a greedy target, on its choice)."""
    return mean_interval(predicted_target + target_p / logged_p * (reward - predicted_logged))


def estimates(
    reward: np.ndarray,
    logged_p: np.ndarray,
    target_p: np.ndarray,
    predicted_logged: np.ndarray,
    predicted_target: np.ndarray,
) -> dict[str, Estimate]:
    """The estimator table: IPS, SNIPS and DR of one target policy, in that order."""
    return {
        "ips": ips(reward, logged_p, target_p),
        "snips": snips(reward, logged_p, target_p),
        "dr": doubly_robust(reward, logged_p, target_p, predicted_logged, predicted_target),
    }


@dataclass(frozen=True)
class Context:
    """One logged decision, as served: what OPE needs to replay any policy on it."""

    served: ServedInputs
    placement: str
    candidates: tuple[str, ...]  # eligible offers at decision time
    action: str  # the first-slot offer taken
    probability: float  # the logging policy's probability of it
    reward: float


def contexts_from_logs(
    decisions: Iterable[Mapping[str, Any]],
    rewarded: Callable[[Mapping[str, Any], str], bool],
    schema: FeatureSchema,
    catalog: Catalog,
) -> list[Context]:
    """First-slot contexts of the logged decisions whose candidates are all still in the
    catalog; ``rewarded(decision, offer_id)`` labels the action."""
    out = []
    for d in decisions:
        if not d["actions"] or d.get("degraded"):
            continue
        candidates = tuple(c[0] for c in d["candidates"])
        if any(c not in catalog.by_id for c in candidates):
            continue
        served = ServedInputs.from_log(d, schema.names)
        if served is None:
            continue
        first = d["actions"][0]
        out.append(
            Context(
                served=served,
                placement=d.get("placement", ""),
                candidates=candidates,
                action=first["offer_id"],
                probability=float(first["probability"]),
                reward=float(rewarded(d, first["offer_id"])),
            )
        )
    return out


def model_propensities(context: Context, scorer: Scorer, catalog: Catalog) -> np.ndarray:
    """The scorer's propensity for every candidate of a logged decision."""
    vocabulary = scorer.vocabulary
    assert vocabulary is not None, "a model policy needs a model"
    offers = [catalog.by_id[c] for c in context.candidates]
    return scorer.predict(build_matrix(context.served, offers, vocabulary))


def evaluate_policies(
    contexts: Sequence[Context],
    models: Mapping[str, Scorer],
    catalog: Catalog,
    reward_model: Scorer,
    exploration: Exploration = GREEDY,
) -> dict[str, dict[str, Estimate]]:
    """IPS, SNIPS and DR of each model's policy, value x lever and random, and the logging
    policy's own realised value, per decision (first slot). The model and value-only
    policies are evaluated as deployed: with ``exploration`` where it applies (greedy
    elsewhere), so an estimate compares with what the policy then realises."""
    reward = np.array([c.reward for c in contexts])
    logged_p = np.array([c.probability for c in contexts])
    fitted = [model_propensities(c, reward_model, catalog) for c in contexts]
    logged_index = [c.candidates.index(c.action) for c in contexts]
    predicted_logged = np.array([f[i] for f, i in zip(fitted, logged_index, strict=True)])
    weights = [
        np.array([catalog.by_id[o].value * catalog.by_id[o].lever for o in c.candidates])
        for c in contexts
    ]
    explores = [exploration.applies(c.served.channel, c.placement) for c in contexts]

    def deployed(priorities: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """The policy's probability of each logged action, and its expected reward under
        the reward model."""
        target, expected = [], []
        for priority, explore, f, i in zip(priorities, explores, fitted, logged_index, strict=True):
            p = slot_probabilities(priority, exploration if explore else GREEDY)
            target.append(p[i])
            expected.append(float(p @ f))
        return np.array(target), np.array(expected)

    policies: dict[str, tuple[np.ndarray, np.ndarray]] = {
        name: deployed(
            [model_propensities(c, s, catalog) * w for c, w in zip(contexts, weights, strict=True)]
        )
        for name, s in models.items()
    }
    policies["value-only"] = deployed(weights)
    policies["random"] = (
        np.array([1.0 / len(c.candidates) for c in contexts]),
        np.array([float(f.mean()) for f in fitted]),
    )
    table = {
        name: estimates(reward, logged_p, target, predicted_logged, expected)
        for name, (target, expected) in policies.items()
    }
    table["logged"] = {"realised": mean_interval(reward)}
    return table
