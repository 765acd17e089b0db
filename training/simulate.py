"""Simulated decision and outcome logs from the demo world.

A uniformly random logging policy chooses among the offers the engine itself finds
eligible (same schema, stage rules and catalog code as serving), and the hidden response
model draws each outcome. Each row keeps the customer features exactly as a decision
would have served them, so training reads what serving computes.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from engine.catalog import Catalog
from engine.decision import DecisionRequest, rule_env
from engine.eligibility import Situation, eligible_offers
from engine.lifecycle import StageRules
from feature_store.schema import LAST_CATEGORY_FIELD, FeatureSchema
from feature_store.store import CustomerRecord
from training.world import TOPICS, World, true_propensity

CHANNEL_MIX = {"web": 0.4, "mobile_app": 0.25, "call_center": 0.15, "email": 0.12, "sms": 0.08}
EVENT_RATES = {
    "page_view": 2.0,
    "product_view": 0.8,
    "search": 0.3,
    "add_to_cart": 0.06,
    "purchase": 0.03,
    "call": 0.1,
    "complaint": 0.05,
}


@dataclass(frozen=True)
class SimulatedLogs:
    """Row-aligned arrays: one logged decision (one chosen offer) per row."""

    features: np.ndarray  # customer features as served, (rows, len(schema.names))
    customer_index: np.ndarray
    offer_ids: list[str]
    channels: list[str]
    stages: list[str]
    last_categories: list[str]
    probability: np.ndarray  # the logging policy's probability of the chosen offer
    true_propensity: np.ndarray
    reward: np.ndarray  # 1 when the customer responded positively

    @property
    def rows(self) -> int:
        return int(self.reward.shape[0])


def _realtime(rng: np.random.Generator, interest: str, now: float) -> dict[str, str]:
    rt: dict[str, str] = {}
    total = 0
    for event, rate in EVENT_RATES.items():
        count = int(rng.poisson(rate))
        if count:
            rt[f"n:{event}"] = str(count)
            total += count
    if total:
        web = int(rng.binomial(total, 0.6))
        rt["c:web"], rt["c:mobile_app"] = str(web), str(total - web)
        rt["ts:last_seen"] = repr(now - float(rng.exponential(86400.0)))
        if "n:purchase" in rt:
            rt["ts:purchase"] = repr(now - float(rng.exponential(10 * 86400.0)))
        draw = rng.random()
        if draw < 0.55:
            rt[LAST_CATEGORY_FIELD] = interest
        elif draw < 0.8:
            rt[LAST_CATEGORY_FIELD] = TOPICS[int(rng.integers(len(TOPICS)))]
    return rt


def simulate_logs(
    world: World,
    schema: FeatureSchema,
    catalog: Catalog,
    stage_rules: StageRules,
    *,
    rows: int,
    seed: int = 11,
    now: float = 1_790_000_000.0,
    progress: bool = False,
) -> SimulatedLogs:
    rng = np.random.default_rng(seed)
    batch_columns = np.column_stack([world.features[f.name] for f in schema.batch])
    batch_columns = batch_columns.astype(np.float32)
    channels = list(CHANNEL_MIX)
    weights = np.array(list(CHANNEL_MIX.values()))
    customers = rng.integers(0, world.size, rows)
    chosen_channels = rng.choice(len(channels), size=rows, p=weights / weights.sum())

    features, index, offer_ids, used_channels, stages, lasts, probs = [], [], [], [], [], [], []
    for i, ch in tqdm(
        zip(customers.tolist(), chosen_channels.tolist(), strict=True),
        total=rows,
        disable=not progress,
        unit="decisions",
    ):
        channel = channels[ch]
        rt = _realtime(rng, TOPICS[int(world.interest[i])], now)
        record = CustomerRecord(world.customer_id(i), True, batch_columns[i], {}, rt)
        vector = schema.customer_vector(record, now)
        request = DecisionRequest(customer_id=world.customer_id(i), channel=channel)
        env = rule_env(schema.names, vector, {}, request)
        stage, _ = stage_rules.derive(env)
        env["stage"] = stage
        offers = eligible_offers(catalog, Situation(channel, "", stage, now), env)
        if not offers:
            continue
        offer = offers[int(rng.integers(len(offers)))]
        features.append(vector)
        index.append(i)
        offer_ids.append(offer.offer_id)
        used_channels.append(channel)
        stages.append(stage)
        lasts.append(rt.get(LAST_CATEGORY_FIELD, ""))
        probs.append(1.0 / len(offers))

    matrix = np.array(features)
    cust = np.array(index, dtype=np.int64)
    p_true = np.empty(len(offer_ids))
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for row, key in enumerate(zip(offer_ids, used_channels, strict=True)):
        groups[key].append(row)
    column = {name: j for j, name in enumerate(schema.names)}
    for (oid, channel), members in groups.items():
        sel = np.array(members)
        offer = catalog.by_id[oid]
        named = {name: matrix[sel, j] for name, j in column.items()}
        hidden = {
            "interest": world.interest[cust[sel]],
            "price_sensitivity": world.price_sensitivity[cust[sel]],
            "traveller": world.traveller[cust[sel]],
        }
        match = np.array([float(lasts[r] in offer.topics) for r in members])
        p_true[sel] = true_propensity(oid, offer.value, offer.topics, channel, named, hidden, match)
    reward = (rng.random(len(offer_ids)) < p_true).astype(np.int8)
    return SimulatedLogs(
        features=matrix,
        customer_index=cust,
        offer_ids=offer_ids,
        channels=used_channels,
        stages=stages,
        last_categories=lasts,
        probability=np.array(probs),
        true_propensity=p_true,
        reward=reward,
    )
