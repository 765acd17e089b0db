"""Training rows from the decision and outcome logs (the Redis streams).

Each action of each logged decision becomes a row: the customer features and the
offer-level inputs exactly as served (nothing is recomputed), the offer, channel, stage,
the probability the policy had of choosing it, and the reward: 1 when a positive outcome
(accept or convert by default) was reported for that decision and offer within the
attribution window. Decisions younger than the window are left out (their label is not
final yet), and so are degraded ones (served from defaults, not from the customer).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import redis

from feature_store import keys
from feature_store.schema import FeatureSchema
from training.rows import TrainingRows

POSITIVE = frozenset({"accept", "convert"})


def read_stream(client: redis.Redis, key: str, field: bytes, page: int = 5000) -> Iterator[Any]:
    """Every entry's JSON payload, oldest first, read in pages."""
    start = "-"
    while True:
        entries: list[tuple[bytes, dict[bytes, bytes]]] = client.xrange(  # type: ignore[assignment]
            key, min=start, max="+", count=page
        )
        for _, fields in entries:
            yield orjson.loads(fields[field])
        if len(entries) < page:
            return
        start = f"({entries[-1][0].decode()}"


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
    that decision within the attribution window."""
    reported: dict[tuple[str, str], list[tuple[str, float]]] = {}
    for o in outcomes:
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
    positive: frozenset[str] = POSITIVE,
) -> tuple[TrainingRows, JoinReport]:
    """Rows of the decisions made before ``until - window_seconds``, in log order."""
    rewarded = rewarder(outcomes, window_seconds, positive)
    names = schema.names
    features, offers, channels, stages, lasts, topics, probs, rewards, ids = ([] for _ in range(9))
    read = used = too_recent = degraded = other = 0
    for d in decisions:
        read += 1
        if d["ts"] > until - window_seconds:
            too_recent += 1
            continue
        if d.get("degraded"):
            degraded += 1
            continue
        try:
            vector = [float(d["features"][n]) for n in names]
        except KeyError:
            other += 1
            continue
        used += 1
        served = d.get("served", {})
        for action in d["actions"]:
            reward = rewarded(d, action["offer_id"])
            features.append(vector)
            offers.append(action["offer_id"])
            channels.append(d["channel"])
            stages.append(d["stage"])
            lasts.append(served.get("last_category", ""))
            topics.append(dict(served.get("topic_counts", {})))
            probs.append(float(action["probability"]))
            rewards.append(int(reward))
            ids.append(d["decision_id"])
    rows = TrainingRows(
        features=np.array(features, dtype=np.float64).reshape(-1, len(names)),
        offer_ids=offers,
        channels=channels,
        stages=stages,
        last_categories=lasts,
        topic_counts=topics,
        probability=np.array(probs),
        reward=np.array(rewards, dtype=np.int8),
        decision_ids=ids,
    )
    return rows, JoinReport(read, used, too_recent, degraded, other)


def read_logs(client: redis.Redis) -> tuple[list[Any], list[Any]]:
    """Every logged decision and outcome, oldest first."""
    return (
        list(read_stream(client, keys.DECISION_LOG, b"d")),
        list(read_stream(client, keys.OUTCOME_LOG, b"o")),
    )


def rows_from_redis(
    client: redis.Redis,
    schema: FeatureSchema,
    *,
    window_seconds: float,
    until: float,
    positive: frozenset[str] = POSITIVE,
) -> tuple[TrainingRows, JoinReport]:
    decisions, outcomes = read_logs(client)
    return join_logs(
        decisions, outcomes, schema, window_seconds=window_seconds, until=until, positive=positive
    )


def outcomes_by_model(
    decisions: Iterable[Mapping[str, Any]],
    outcomes: Iterable[Mapping[str, Any]],
    positive: frozenset[str] = POSITIVE,
) -> dict[str, tuple[int, int]]:
    """Per model version: (actions taken, actions with a positive outcome), whenever it
    was reported: the champion / challenger comparison."""
    hits = {(o["decision_id"], o["offer_id"]) for o in outcomes if o["outcome"] in positive}
    counts: dict[str, list[int]] = {}
    for d in decisions:
        tally = counts.setdefault(d["model_version"], [0, 0])
        for action in d["actions"]:
            tally[0] += 1
            tally[1] += (d["decision_id"], action["offer_id"]) in hits
    return {version: (n, k) for version, (n, k) in counts.items()}
