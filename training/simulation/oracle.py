"""The oracle: the hidden response model's expected value of any logged decision's
candidates, and of a whole policy on the logged decisions (what off-policy estimates
estimate)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from engine.core.arbitration import GREEDY, slot_probabilities
from engine.core.catalog import Catalog, Offer
from engine.core.model_input import ServedInputs
from engine.core.schema import FeatureSchema
from engine.core.scoring import Scorer
from training.evaluation import contexts_from_logs, model_propensities
from training.world import World, true_propensity


def expected_values(
    entry: Mapping[str, Any],
    world: World,
    catalog: Catalog,
    names: Sequence[str],
    offers: Sequence[str] | None = None,
) -> dict[str, float]:
    """True acceptance probability (hidden model) of every candidate of a logged
    decision, or of ``offers`` in the same situation."""
    index = int(entry["customer_id"].split("-")[1]) - 1
    served = ServedInputs.from_log(entry, names)
    assert served is not None, "a decision logged with another feature schema"
    named = {n: np.array([v]) for n, v in zip(names, served.features.tolist(), strict=True)}
    hidden = world.hidden(slice(index, index + 1))
    out = {}
    for offer_id in offers if offers is not None else [c[0] for c in entry["candidates"]]:
        p = propensity(catalog.by_id[offer_id], served, named, hidden)
        out[offer_id] = float(p[0]) * world.appeal.get(offer_id, 1.0)
    return out


def propensity(
    offer: Offer,
    served: ServedInputs,
    named: Mapping[str, np.ndarray],
    hidden: Mapping[str, np.ndarray],
) -> np.ndarray:
    """The hidden model's chance that customers with the ``hidden`` traits (rows) and the
    features ``named`` (by name, row-aligned) respond to ``offer`` in the ``served``
    situation (channel, latest category, the day's views)."""
    rows = len(hidden["interest"])
    return true_propensity(
        offer.offer_id,
        offer.value,
        offer.topics,
        served.channel,
        named,
        hidden,
        np.full(rows, float(served.last_category in offer.topics)),
        np.full(rows, sum(served.topic_counts.get(t, 0.0) for t in offer.topics)),
    )


def true_value(
    entries: Sequence[Mapping[str, Any]],
    world: World,
    catalog: Catalog,
    schema: FeatureSchema,
    scorer: Scorer,
) -> float:
    """What the hidden model says ``scorer``'s policy, as deployed, earns in value per
    decision on the logged decisions ``entries`` (among their candidates): the estimand of
    a paired lift, so an estimate's distance to it is the estimator's own error."""
    exploration = catalog.exploration
    values = []
    for entry in entries:
        contexts = contexts_from_logs([entry], _unrewarded, schema, catalog)
        if not contexts:
            continue
        context = contexts[0]
        truth = expected_values(entry, world, catalog, schema.names)
        offers = [catalog.by_id[o] for o in context.candidates]
        value = np.array([o.value for o in offers])
        priority = (
            model_propensities(context, scorer, catalog)
            * value
            * np.array([o.lever for o in offers])
        )
        explores = exploration.applies(context.served.channel, context.placement)
        p = slot_probabilities(priority, exploration if explores else GREEDY)
        values.append(float(p @ (np.array([truth[o] for o in context.candidates]) * value)))
    return float(np.mean(values)) if values else float("nan")


def _unrewarded(decision: Mapping[str, Any], offer_id: str) -> bool:
    return False
