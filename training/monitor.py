"""Every offer's model, watched: per offer and channel over a recent window, the evidence
(decisions, impressions, positive answers), the success rate, how well the served
propensities rank customers (AUC) and match what happened (calibration, binned), and a
drift flag.

Read from the logs as served: each action of each decision (not degraded) made in the
window is a row once its answer is known or its channel's reward window has passed
(training/logs.py), with the propensity the serving model gave it. An offer and channel
is flagged for drift when, on enough evidence:

- its calibration error (row-weighted gap between predicted and realised rates over
  equal-count bins) is above ``DRIFT_CALIBRATION`` (0.05) with at least ``MIN_ROWS``
  (200) rows: the model promises more, or less, than customers do;
- its AUC is more than ``DRIFT_AUC_DROP`` (0.10) below the serving model's holdout AUC,
  with at least ``MIN_POSITIVES`` (20) positive and as many negative answers: it no
  longer tells who will take the offer.

Pega asks operators to look at this every two weeks; here every training run computes
it and publishes it (``arb:models:offers``), so `arbiter models` and ``/metrics`` show it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.reward import RewardWindows
from feature_store import keys
from feature_store.redis_client import SyncClient, translated
from training.logs import Outcomes
from training.metrics import auc, calibration_bins

DRIFT_CALIBRATION = 0.05
DRIFT_AUC_DROP = 0.10
MIN_ROWS = 200
MIN_POSITIVES = 20
BINS = 10


@dataclass(frozen=True)
class OfferHealth:
    offer_id: str
    channel: str
    decisions: int  # actions made in the window
    answered: int  # of them with a known label (answered, or the window passed)
    impressions: int  # reported impressions
    positives: int  # accepted or converted
    success_rate: float  # positives / answered
    auc: float  # of the served propensities against the answers (NaN: one class)
    calibration_error: float
    # (mean predicted, realised rate, rows) per bin of equal count, lowest first
    bins: tuple[tuple[float, float, int], ...] = field(default=())
    drift: str = ""  # why it is flagged; empty when it is not


@dataclass(frozen=True)
class HealthReport:
    computed_at: float
    since: float
    model_version: str
    model_auc: float
    offers: tuple[OfferHealth, ...]

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | bytes) -> HealthReport:
        raw = json.loads(text)
        offers = tuple(
            OfferHealth(**{**o, "bins": tuple(tuple(b) for b in o["bins"])}) for o in raw["offers"]
        )
        return cls(raw["computed_at"], raw["since"], raw["model_version"], raw["model_auc"], offers)


class Tally:
    """Collects the actions of the decisions made between ``since`` and ``now`` as they
    stream by (``add``), to be labelled once every outcome is known (``report``)."""

    def __init__(self, since: float, now: float) -> None:
        self.since, self.now = since, now
        self._actions: list[tuple[str, str, float, str, float]] = []
        self._seen: set[str] = set()

    def add(self, d: Mapping[str, Any]) -> None:
        ts = float(d["ts"])
        if ts < self.since or ts > self.now or d.get("degraded") or d["decision_id"] in self._seen:
            return
        self._seen.add(d["decision_id"])
        for action in d["actions"]:
            self._actions.append(
                (d["decision_id"], action["offer_id"], ts, d.get("channel", ""),
                 float(action["propensity"]))
            )  # fmt: skip

    def report(
        self,
        outcomes: Iterable[Mapping[str, Any]],
        windows: RewardWindows,
        *,
        model_version: str = "",
        model_auc: float = float("nan"),
    ) -> HealthReport:
        listed = list(outcomes)
        index = Outcomes.indexed(listed)
        shown = {(o["decision_id"], o["offer_id"]) for o in listed if o["outcome"] == "impression"}
        made: dict[tuple[str, str], int] = {}
        impressions: dict[tuple[str, str], int] = {}
        rows: dict[tuple[str, str], tuple[list[float], list[int]]] = {}
        for decision_id, offer_id, ts, channel, propensity in self._actions:
            key = (offer_id, channel)
            made[key] = made.get(key, 0) + 1
            impressions[key] = impressions.get(key, 0) + ((decision_id, offer_id) in shown)
            entry = {"decision_id": decision_id, "ts": ts, "channel": channel}
            reward, _ = index.label(entry, offer_id, windows, self.now)
            if reward is not None:
                predicted, labels = rows.setdefault(key, ([], []))
                predicted.append(propensity)
                labels.append(reward)
        out = []
        for key in sorted(made):
            scores, answers = rows.get(key, ([], []))
            out.append(
                _health(key, made[key], impressions[key], np.asarray(scores, dtype=np.float64),
                        np.asarray(answers, dtype=np.float64), model_auc)
            )  # fmt: skip
        return HealthReport(self.now, self.since, model_version, model_auc, tuple(out))


def offer_health(
    decisions: Iterable[Mapping[str, Any]],
    outcomes: Iterable[Mapping[str, Any]],
    windows: RewardWindows,
    *,
    now: float,
    since: float,
    model_version: str = "",
    model_auc: float = float("nan"),
) -> HealthReport:
    """The report over the decisions made between ``since`` and ``now``."""
    tally = Tally(since, now)
    for d in decisions:
        tally.add(d)
    return tally.report(outcomes, windows, model_version=model_version, model_auc=model_auc)


def _health(
    key: tuple[str, str],
    decisions: int,
    impressions: int,
    predicted: np.ndarray,
    labels: np.ndarray,
    model_auc: float,
) -> OfferHealth:
    answered = int(labels.shape[0])
    positives = int(labels.sum())
    bins = tuple(calibration_bins(labels, predicted, BINS)) if answered else ()
    error = sum(abs(p - r) * n for p, r, n in bins) / answered if answered else float("nan")
    area = auc(labels, predicted) if answered else float("nan")
    drift = []
    if answered >= MIN_ROWS and error > DRIFT_CALIBRATION:
        drift.append(f"calibration error {error:.3f} > {DRIFT_CALIBRATION}")
    if (
        min(positives, answered - positives) >= MIN_POSITIVES
        and np.isfinite(model_auc)
        and area < model_auc - DRIFT_AUC_DROP
    ):
        drift.append(f"AUC {area:.3f} more than {DRIFT_AUC_DROP} below the model's {model_auc:.3f}")
    return OfferHealth(
        offer_id=key[0],
        channel=key[1],
        decisions=decisions,
        answered=answered,
        impressions=impressions,
        positives=positives,
        success_rate=positives / answered if answered else float("nan"),
        auc=area,
        calibration_error=error,
        bins=bins,
        drift="; ".join(drift),
    )


def publish(client: SyncClient, report: HealthReport) -> None:
    """Where `arbiter models` and every server's ``/metrics`` read it."""
    with translated("publishing the offers' health"):
        client.set(keys.OFFER_HEALTH, report.to_json())


def published(client: SyncClient) -> HealthReport | None:
    with translated("reading the offers' health"):
        raw = client.get(keys.OFFER_HEALTH)
    return None if raw is None else HealthReport.from_json(raw)


def table(report: HealthReport) -> str:
    """The report as text: one line per offer and channel, flagged ones marked."""
    days = (report.computed_at - report.since) / 86400
    lines = [
        f"each offer's model over the last {days:g} days, served by {report.model_version or '?'}"
        f" (holdout AUC {report.model_auc:.3f}); computed"
        f" {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(report.computed_at))} UTC",
        f"  {'offer':24} {'channel':12} {'decisions':>9} {'answered':>8} {'shown':>6}"
        f" {'positive':>8} {'success':>7} {'AUC':>6} {'calib.err':>9}  drift",
    ]
    for o in report.offers:
        lines.append(
            f"{'! ' if o.drift else '  '}{o.offer_id:24} {o.channel:12} {o.decisions:>9}"
            f" {o.answered:>8} {o.impressions:>6} {o.positives:>8} {o.success_rate:>7.3f}"
            f" {o.auc:>6.3f} {o.calibration_error:>9.3f}  {o.drift}"
        )
    flagged = sum(bool(o.drift) for o in report.offers)
    lines.append(
        f"{flagged} of {len(report.offers)} flagged (calibration error > {DRIFT_CALIBRATION}"
        f" on {MIN_ROWS}+ rows, or AUC {DRIFT_AUC_DROP} below the model's on"
        f" {MIN_POSITIVES}+ positives)"
    )
    return "\n".join(lines)


def write_report(report: HealthReport, path: Path) -> None:
    """The HTML report: the offers' AUC against their success rate (bubbles sized by
    evidence, flagged ones red), a calibration curve per offer, and the table."""
    from training import figures

    sections = [
        (
            "AUC against success rate, by offer and channel",
            figures.bubbles(
                [f"{o.offer_id} ({o.channel})" for o in report.offers],
                [o.success_rate for o in report.offers],
                [o.auc for o in report.offers],
                [o.answered for o in report.offers],
                [bool(o.drift) for o in report.offers],
                "success rate",
                "AUC of the served propensities",
                "Bubble area: answered decisions; red: flagged for drift",
            ),
        ),
        (
            "Calibration per offer",
            figures.calibration_grid(
                [f"{o.offer_id} ({o.channel})" for o in report.offers if o.bins],
                [o.bins for o in report.offers if o.bins],
                [bool(o.drift) for o in report.offers if o.bins],
            ),
        ),
    ]
    path.write_text(figures.page("Arbiter: every offer's model", sections, table(report)))
