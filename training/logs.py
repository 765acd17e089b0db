"""Training rows from the decision and outcome logs (the Redis streams).

Each action of each logged decision becomes a row: the customer features and the
offer-level inputs exactly as served (nothing is recomputed), the offer, channel, stage,
the probability the policy had of choosing it, and the reward: 1 when a positive outcome
(accept or convert by default) was reported for that decision and offer within the
attribution window. Decisions younger than the window are left out (their label is not
final yet), and so are degraded ones (served from defaults, not from the customer).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.vocabulary import POSITIVE_OUTCOMES
from engine.core.model_input import ServedInputs
from feature_store.log_reader import read_logs
from feature_store.redis_client import SyncClient
from feature_store.schema import FeatureSchema
from training.rows import TrainingRows


@dataclass(frozen=True)
class JoinReport:
    decisions: int  # read
    used: int  # contributed rows
    too_recent: int
    degraded: int
    other_schema: int  # logged with other feature names


def rewarder(
    outcomes: Iterable[Mapping[str, Any]], window_seconds: float, positive: frozenset[str]
) -> Callable[[Mapping[str, Any], str], bool]:
    """``rewarded(decision, offer_id)``: a positive outcome was reported for that offer of
    that decision within the attribution window. An idempotency key counts once, whatever
    the log holds (the store appends each key once; this is defence in depth)."""
    reported: dict[tuple[str, str], list[tuple[str, float]]] = {}
    keys_seen: set[str] = set()
    for o in outcomes:
        key = o.get("idempotency_key")
        if key is not None:
            if key in keys_seen:
                continue
            keys_seen.add(key)
        reported.setdefault((o["decision_id"], o["offer_id"]), []).append(
            (o["outcome"], float(o["occurred_at"]))
        )

    def rewarded(decision: Mapping[str, Any], offer_id: str) -> bool:
        hits = reported.get((decision["decision_id"], offer_id), ())
        return any(o in positive and 0 <= at - decision["ts"] <= window_seconds for o, at in hits)

    return rewarded


def join_logs(
    decisions: Iterable[Mapping[str, Any]],
    outcomes: Iterable[Mapping[str, Any]],
    schema: FeatureSchema,
    *,
    window_seconds: float,
    until: float,
    positive: frozenset[str] = POSITIVE_OUTCOMES,
) -> tuple[TrainingRows, JoinReport]:
    """Rows of the decisions made before ``until - window_seconds``, in log order."""
    rewarded = rewarder(outcomes, window_seconds, positive)
    served_rows: list[ServedInputs] = []
    offers, probs, rewards, ids = [], [], [], []
    read = used = too_recent = degraded = other = 0
    for d in decisions:
        read += 1
        if d["ts"] > until - window_seconds:
            too_recent += 1
            continue
        if d.get("degraded"):
            degraded += 1
            continue
        served = ServedInputs.from_log(d, schema.names)
        if served is None:
            other += 1
            continue
        used += 1
        for action in d["actions"]:
            served_rows.append(served)
            offers.append(action["offer_id"])
            probs.append(float(action["probability"]))
            rewards.append(int(rewarded(d, action["offer_id"])))
            ids.append(d["decision_id"])
    rows = TrainingRows(
        served=served_rows,
        offer_ids=offers,
        probability=np.array(probs),
        reward=np.array(rewards, dtype=np.int8),
        decision_ids=ids,
    )
    return rows, JoinReport(read, used, too_recent, degraded, other)


def rows_from_redis(
    client: SyncClient,
    schema: FeatureSchema,
    *,
    window_seconds: float,
    until: float,
    positive: frozenset[str] = POSITIVE_OUTCOMES,
) -> tuple[TrainingRows, JoinReport]:
    decisions, outcomes = read_logs(client)
    return join_logs(
        decisions, outcomes, schema, window_seconds=window_seconds, until=until, positive=positive
    )
