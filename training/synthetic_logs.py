"""Simulated decision and outcome logs from the demo world.

A uniformly random logging policy chooses among the offers the engine itself finds
eligible (same schema, stage rules and catalog code as serving), and the hidden response
model draws each outcome. Each row keeps the customer features exactly as a decision
would have served them, so training reads what serving computes.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from tqdm import tqdm

from engine.core.catalog import Catalog
from engine.core.customer import (
    CHANNEL_COUNT,
    EVENT_COUNT,
    LAST_SEEN,
    LIFETIME_COUNT,
    STAMP,
    CustomerRecord,
    category_counter,
)
from engine.core.decision import DecisionRequest, rule_env
from engine.core.eligibility import Situation, eligible_offers
from engine.core.lifecycle import StageRules
from engine.core.model_input import ServedInputs
from engine.core.schema import FeatureSchema
from training.rows import TrainingRows
from training.world import TOPICS, World, true_propensity

CHANNEL_MIX = {"web": 0.4, "mobile_app": 0.25, "call_center": 0.15, "email": 0.12, "sms": 0.08}
# Events per customer per week.
EVENT_RATES = {
    "page_view": 6.0,
    "product_view": 2.5,
    "search": 0.8,
    "compare": 0.3,
    "add_to_cart": 0.15,
    "purchase": 0.08,
    "call": 0.25,
    "complaint": 0.1,
}
VIEWS = ("page_view", "product_view")


def _activity(
    rng: np.random.Generator, customer_id: str, batch: np.ndarray, interest: str, now: float
) -> CustomerRecord:
    """A plausible real-time state: what RecordEvent would have built from a week of
    events (lifetime counters, 1 h / 24 h / 7 d windows, the current session)."""
    rt: dict[str, str] = {}
    windows: dict[str, tuple[float, ...]] = {}
    session: dict[str, str] = {}
    channel_week = {"web": 0.0, "mobile_app": 0.0}
    last_seen = 0.0
    last_category = ""
    for event, rate in EVENT_RATES.items():
        week = int(rng.poisson(rate))
        if not week:
            continue
        day = int(rng.binomial(week, 0.3))
        hour = int(rng.binomial(day, 0.2))
        rt[f"{LIFETIME_COUNT}{event}"] = str(week + int(rng.poisson(rate)))
        windows[f"{EVENT_COUNT}{event}"] = (float(hour), float(day), float(week))
        if hour:
            session[f"{EVENT_COUNT}{event}"] = str(int(rng.binomial(hour, 0.8)) or 1)
        web = float(rng.binomial(week, 0.6))
        channel_week["web"] += web
        channel_week["mobile_app"] += week - web
        ago = (
            rng.uniform(0, 3600)
            if hour
            else rng.uniform(3600, 86400)
            if day
            else (rng.uniform(86400, 7 * 86400))
        )
        last_seen = max(last_seen, now - ago)
        if event == "purchase":
            rt[f"{STAMP}purchase"] = repr(now - ago)
        if event in VIEWS:
            topic = interest if rng.random() < 0.6 else TOPICS[int(rng.integers(len(TOPICS)))]
            old = windows.get(category_counter(topic), (0.0, 0.0, 0.0))
            windows[category_counter(topic)] = (old[0] + hour, old[1] + day, old[2] + week)
            last_category = topic
    for channel, week_count in channel_week.items():
        if week_count:
            rt[f"{CHANNEL_COUNT}{channel}"] = str(int(week_count))
            windows[f"{CHANNEL_COUNT}{channel}"] = (0.0, 0.0, week_count)
    if last_seen:
        rt[LAST_SEEN] = repr(last_seen)
    return CustomerRecord(
        customer_id, True, batch, {}, rt, windows, session, last_category=last_category
    )


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
) -> TrainingRows:
    rng = np.random.default_rng(seed)
    batch_columns = np.column_stack([world.features[f.name] for f in schema.batch])
    batch_columns = batch_columns.astype(np.float32)
    channels = list(CHANNEL_MIX)
    weights = np.array(list(CHANNEL_MIX.values()))
    customers = rng.integers(0, world.size, rows)
    chosen_channels = rng.choice(len(channels), size=rows, p=weights / weights.sum())

    served: list[ServedInputs] = []
    index, offer_ids, probs = [], [], []
    for i, ch in tqdm(
        zip(customers.tolist(), chosen_channels.tolist(), strict=True),
        total=rows,
        disable=not progress,
        unit="decisions",
    ):
        channel = channels[ch]
        record = _activity(
            rng, world.customer_id(i), batch_columns[i], TOPICS[int(world.interest[i])], now
        )
        vector = schema.customer_vector(record, now)
        request = DecisionRequest(customer_id=world.customer_id(i), channel=channel)
        env = rule_env(schema.names, vector, {}, request)
        stage, _ = stage_rules.derive(env)
        env["stage"] = stage
        offers = eligible_offers(catalog, Situation(channel, "", stage, now), env)
        if not offers:
            continue
        offer = offers[int(rng.integers(len(offers)))]
        served.append(ServedInputs.from_record(record, vector, channel, stage))
        index.append(i)
        offer_ids.append(offer.offer_id)
        probs.append(1.0 / len(offers))

    matrix = np.array([s.features for s in served])
    cust = np.array(index, dtype=np.int64)
    p_true = np.empty(len(offer_ids))
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for row, (oid, s) in enumerate(zip(offer_ids, served, strict=True)):
        groups[(oid, s.channel)].append(row)
    column = {name: j for j, name in enumerate(schema.names)}
    for (oid, channel), members in groups.items():
        sel = np.array(members)
        offer = catalog.by_id[oid]
        named = {name: matrix[sel, j] for name, j in column.items()}
        hidden = world.hidden(cust[sel])
        match = np.array([float(served[r].last_category in offer.topics) for r in members])
        views = np.array(
            [sum(served[r].topic_counts.get(t, 0.0) for t in offer.topics) for r in members]
        )
        p_true[sel] = true_propensity(
            oid, offer.value, offer.topics, channel, named, hidden, match, views
        )
    reward = (rng.random(len(offer_ids)) < p_true).astype(np.int8)
    return TrainingRows(
        served=served,
        customer_index=cust,
        offer_ids=offer_ids,
        probability=np.array(probs),
        true_propensity=p_true,
        reward=reward,
    )
