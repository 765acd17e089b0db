"""Labels from the decision and outcome logs: when a logged action becomes a training row,
and with which reward.

Each action of each logged decision becomes a row: the customer features and the
offer-level inputs exactly as served (nothing is recomputed), the offer, channel, stage,
the probability the policy had of choosing it, and the reward. A row is *matured*, and
trained on, as soon as its label is known:

- a positive outcome (accept, convert) was reported for that decision and offer within
  the attribution window (``attribution_hours``, 72 by default): reward 1;
- a terminal answer without one (decline, dismiss): reward 0;
- no answer, but its channel's reward window has passed (``RewardWindows``: web and app
  minutes, the call center an hour, email and SMS days): reward 0, no response.

An outcome that comes after its channel's window (but inside the attribution window)
counts where it belongs: every training run labels the logs afresh, so the next run
trains that decision with its real answer (``JoinReport.late`` counts them). Later than
the attribution window, it is not the decision's doing. Degraded decisions (served from
defaults, not from the customer) are left out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from common.reward import RewardWindows
from common.vocabulary import POSITIVE_OUTCOMES, TERMINAL_OUTCOMES
from engine.core.model_input import ServedInputs
from engine.core.schema import FeatureSchema
from feature_store.log_reader import read_logs
from feature_store.redis_client import SyncClient
from training.rows import TrainingRows


@dataclass
class Outcomes:
    """The outcome log indexed by (decision id, offer id): the times of its positive and
    terminal answers. An idempotency key counts once, whatever the log holds (the store
    appends each key once; this is defence in depth), and so does an unkeyed report
    repeated whole."""

    positive: frozenset[str] = POSITIVE_OUTCOMES
    terminal: frozenset[str] = TERMINAL_OUTCOMES
    _answers: dict[tuple[str, str], list[tuple[bool, float]]] = field(default_factory=dict)
    _seen: set[object] = field(default_factory=set)

    @classmethod
    def indexed(
        cls, outcomes: Iterable[Mapping[str, Any]], positive: frozenset[str] = POSITIVE_OUTCOMES
    ) -> Outcomes:
        index = cls(positive=positive)
        index.add(outcomes)
        return index

    def add(self, outcomes: Iterable[Mapping[str, Any]]) -> None:
        for o in outcomes:
            kind = o["outcome"]
            at = float(o["occurred_at"])
            key = o.get("idempotency_key") or (o["decision_id"], o["offer_id"], kind, at)
            if key in self._seen:
                continue
            self._seen.add(key)
            if kind not in self.positive and kind not in self.terminal:
                continue  # impressions and clicks say nothing final
            answers = self._answers.setdefault((o["decision_id"], o["offer_id"]), [])
            answers.append((kind in self.positive, at))

    def label(
        self, decision: Mapping[str, Any], offer_id: str, windows: RewardWindows, now: float
    ) -> tuple[int | None, bool]:
        """(reward, late): 1 or 0 once known (see the module), None while the row waits;
        ``late`` when its positive answer came after the channel's window."""
        ts = float(decision["ts"])
        wait = windows.wait(decision.get("channel", ""))
        terminal = False
        for positive, at in self._answers.get((decision["decision_id"], offer_id), ()):
            if not 0 <= at - ts <= windows.attribution or at > now:
                continue
            if positive:
                return 1, at - ts > wait
            terminal = True
        if terminal or now - ts >= wait:
            return 0, False
        return None, False


def rewarder(
    outcomes: Iterable[Mapping[str, Any]], window_seconds: float, positive: frozenset[str]
) -> Callable[[Mapping[str, Any], str], bool]:
    """``rewarded(decision, offer_id)``: a positive outcome was reported for that offer of
    that decision within ``window_seconds`` of it."""
    index = Outcomes.indexed(outcomes, positive)
    windows = RewardWindows.uniform(window_seconds)

    def rewarded(decision: Mapping[str, Any], offer_id: str) -> bool:
        reward, _ = index.label(decision, offer_id, windows, float("inf"))
        return reward == 1

    return rewarded


@dataclass
class JoinReport:
    decisions: int = 0  # read
    used: int = 0  # contributed rows
    waiting: int = 0  # no action matured yet: no answer, inside its channel's window
    degraded: int = 0
    other_schema: int = 0  # logged with other feature names
    duplicates: int = 0  # a decision id read again (Redis and the export; a retried write)
    late: int = 0  # rows whose positive answer came after the channel's window
    base_rows: int = 0  # rows of the data the first model learnt from
    rows: int = 0  # logged rows (matured actions)
    positives: int = 0  # of them, answered positively

    def count(self, reward: int, late: bool) -> None:
        """A matured row."""
        self.rows += 1
        self.positives += reward
        self.late += late

    def __str__(self) -> str:
        return (
            f"{self.used} of {self.decisions} logged decisions used ({self.waiting} waiting"
            f" for an answer, {self.degraded} degraded, {self.other_schema} with other"
            f" features, {self.duplicates} read twice): {self.rows} rows, {self.positives}"
            f" positive ({self.late} answered after their channel's window); and"
            f" {self.base_rows} base rows"
        )


def matured(
    decisions: Iterable[Mapping[str, Any]],
    index: Outcomes,
    schema: FeatureSchema,
    windows: RewardWindows,
    now: float,
    report: JoinReport,
) -> Iterator[tuple[Mapping[str, Any], ServedInputs, list[tuple[int | None, bool]]]]:
    """(decision, its inputs as served, each action's (reward, late)) of every decision
    that can be trained on and has an action matured as of ``now``, each decision id once;
    the rest counted in ``report``."""
    seen: set[str] = set()
    for d in decisions:
        report.decisions += 1
        if d["decision_id"] in seen:
            report.duplicates += 1
            continue
        seen.add(d["decision_id"])
        served = usable(d, schema, report)
        if served is None or not d["actions"]:  # nothing was offered: nothing to learn
            continue
        labels = [index.label(d, a["offer_id"], windows, now) for a in d["actions"]]
        if all(reward is None for reward, _ in labels):
            report.waiting += 1
            continue
        report.used += 1
        yield d, served, labels


def join_logs(
    decisions: Iterable[Mapping[str, Any]],
    outcomes: Iterable[Mapping[str, Any]],
    schema: FeatureSchema,
    *,
    windows: RewardWindows,
    until: float,
    positive: frozenset[str] = POSITIVE_OUTCOMES,
) -> tuple[TrainingRows, JoinReport]:
    """The matured rows of ``decisions`` as of ``until``, in log order (each decision id
    once), held in memory: for small logs and tests; training streams
    (training/dataset.py)."""
    index = Outcomes.indexed(outcomes, positive)
    served_rows: list[ServedInputs] = []
    offers, probs, rewards, ids = [], [], [], []
    report = JoinReport()
    for d, served, labels in matured(decisions, index, schema, windows, until, report):
        for action, (reward, late) in zip(d["actions"], labels, strict=True):
            if reward is None:
                continue
            report.count(reward, late)
            served_rows.append(served)
            offers.append(action["offer_id"])
            probs.append(float(action["probability"]))
            rewards.append(reward)
            ids.append(d["decision_id"])
    rows = TrainingRows(
        served=served_rows,
        offer_ids=offers,
        probability=np.array(probs),
        reward=np.array(rewards, dtype=np.int8),
        decision_ids=ids,
    )
    return rows, report


def usable(d: Mapping[str, Any], schema: FeatureSchema, report: JoinReport) -> ServedInputs | None:
    """The inputs a decision was served with, when it can be trained on (counted in
    ``report`` when not: degraded, or logged with other features)."""
    if d.get("degraded"):
        report.degraded += 1
        return None
    served = ServedInputs.from_log(d, schema.names)
    if served is None:
        report.other_schema += 1
    return served


def rows_from_redis(
    client: SyncClient,
    schema: FeatureSchema,
    *,
    windows: RewardWindows,
    until: float,
    positive: frozenset[str] = POSITIVE_OUTCOMES,
) -> tuple[TrainingRows, JoinReport]:
    decisions, outcomes = read_logs(client)
    return join_logs(decisions, outcomes, schema, windows=windows, until=until, positive=positive)
