"""`arbiter experiments report`: a champion / challenger experiment read from the decision
and outcome logs.

The arms are the decisions the challenger's version served and the champion's served
while the challenge ran (from the challenger's first decision to its last). Per arm:
customers, decisions, decisions with a positive outcome (accept, convert) and their value
(as reported, else the offer's value in the catalog); the uplift of the challenger's
acceptance per decision with a 95% interval and a two-sided z-test, the same for value
per decision (Welch), and a sample-ratio-mismatch check: customers per arm against the
share the challenge was set to (chi-square; a p-value under 0.001 means the assignment
or the logging is broken and the uplift is not to be trusted).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from common.vocabulary import POSITIVE_OUTCOMES

SRM_ALPHA = 0.001  # the usual threshold: a mismatch this unlikely is a bug, not chance


@dataclass(frozen=True)
class Arm:
    name: str
    customers: int
    decisions: int
    accepted: int
    values: np.ndarray  # value reported per decision (0 without a positive outcome)

    @property
    def acceptance(self) -> float:
        return self.accepted / self.decisions if self.decisions else 0.0

    @property
    def value(self) -> float:
        return float(self.values.mean()) if self.values.size else 0.0


@dataclass(frozen=True)
class Difference:
    value: float
    low: float
    high: float
    p_value: float


@dataclass(frozen=True)
class Report:
    experiment: str
    share: float
    champion: Arm
    challenger: Arm
    acceptance_uplift: Difference
    value_uplift: Difference
    srm_p_value: float

    @property
    def sample_ratio_mismatch(self) -> bool:
        return self.srm_p_value < SRM_ALPHA


def arms(
    decisions: Iterable[Mapping[str, Any]],
    outcomes: Iterable[Mapping[str, Any]],
    challenger: str,
    offer_values: Mapping[str, float] | None = None,
    positive: frozenset[str] = POSITIVE_OUTCOMES,
) -> tuple[Arm, Arm]:
    """(champion, challenger) while the challenger ``challenger`` served. A positive
    outcome is worth the value reported with it, else its offer's (``offer_values``)."""
    worth = offer_values or {}
    value: dict[str, float] = {}
    for o in outcomes:
        if o["outcome"] in positive:
            got = float(o.get("value") or 0) or worth.get(o.get("offer_id", ""), 0.0)
            value[o["decision_id"]] = value.get(o["decision_id"], 0.0) + got
    decisions = [d for d in decisions if d["actions"]]
    served = [d["ts"] for d in decisions if d["model_version"] == challenger]
    if not served:
        raise ValueError(f"no decision in the logs was served by {challenger}")
    start, end = min(served), max(served)
    during = [d for d in decisions if start <= d["ts"] <= end]

    def arm(name: str, members: list[Mapping[str, Any]]) -> Arm:
        return Arm(
            name,
            customers=len({d["customer_id"] for d in members}),
            decisions=len(members),
            accepted=sum(d["decision_id"] in value for d in members),
            values=np.array([value.get(d["decision_id"], 0.0) for d in members]),
        )

    return (
        arm("champion", [d for d in during if d["model_version"] != challenger]),
        arm("challenger", [d for d in during if d["model_version"] == challenger]),
    )


def proportion_difference(a: Arm, b: Arm) -> Difference:
    """b's acceptance minus a's: Wald 95% interval, pooled two-proportion z-test."""
    pa, pb = a.acceptance, b.acceptance
    se = math.sqrt(pa * (1 - pa) / max(a.decisions, 1) + pb * (1 - pb) / max(b.decisions, 1))
    pooled = (a.accepted + b.accepted) / max(a.decisions + b.decisions, 1)
    se0 = math.sqrt(pooled * (1 - pooled) * (1 / max(a.decisions, 1) + 1 / max(b.decisions, 1)))
    z = (pb - pa) / se0 if se0 else 0.0
    return Difference(pb - pa, pb - pa - 1.96 * se, pb - pa + 1.96 * se, _two_sided(z))


def mean_difference(a: Arm, b: Arm) -> Difference:
    """b's value per decision minus a's: Welch's 95% interval and t-test."""
    diff = b.value - a.value
    if a.values.size < 2 or b.values.size < 2:
        return Difference(diff, -math.inf, math.inf, 1.0)
    va, vb = a.values.var(ddof=1) / a.values.size, b.values.var(ddof=1) / b.values.size
    se = math.sqrt(va + vb)
    if se == 0:
        return Difference(diff, diff, diff, 1.0 if diff == 0 else 0.0)
    df = (va + vb) ** 2 / (va**2 / (a.values.size - 1) + vb**2 / (b.values.size - 1))
    half = float(stats.t.ppf(0.975, df)) * se
    p = float(2 * stats.t.sf(abs(diff / se), df))
    return Difference(diff, diff - half, diff + half, p)


def srm_p_value(champion: Arm, challenger: Arm, share: float) -> float:
    """Chi-square goodness of fit of the customers per arm to ``share``."""
    total = champion.customers + challenger.customers
    if not total or not 0 < share < 1:
        return 1.0
    expected = [total * (1 - share), total * share]
    return float(stats.chisquare([champion.customers, challenger.customers], expected).pvalue)


def report(
    decisions: Iterable[Mapping[str, Any]],
    outcomes: Iterable[Mapping[str, Any]],
    challenger: str,
    share: float,
    offer_values: Mapping[str, float] | None = None,
) -> Report:
    champion, treated = arms(decisions, outcomes, challenger, offer_values)
    return Report(
        experiment=challenger,
        share=share,
        champion=champion,
        challenger=treated,
        acceptance_uplift=proportion_difference(champion, treated),
        value_uplift=mean_difference(champion, treated),
        srm_p_value=srm_p_value(champion, treated, share),
    )


def text(r: Report) -> str:
    lines = [
        f"experiment: challenger {r.experiment}, set to {r.share:.0%} of customers",
        f"{'arm':10s}  {'customers':>9s}  {'decisions':>9s}  {'accepted':>8s}"
        f"  {'acceptance':>10s}  {'value / decision':>16s}",
    ]
    for arm in (r.champion, r.challenger):
        lines.append(
            f"{arm.name:10s}  {arm.customers:9d}  {arm.decisions:9d}  {arm.accepted:8d}"
            f"  {arm.acceptance:10.4f}  {arm.value:16.3f}"
        )
    a, v = r.acceptance_uplift, r.value_uplift
    seen = r.challenger.customers / max(r.champion.customers + r.challenger.customers, 1)
    relative = a.value / r.champion.acceptance if r.champion.acceptance else math.nan
    lines += [
        f"acceptance uplift: {a.value:+.4f} ({relative:+.1%}), 95% interval"
        f" [{a.low:+.4f}, {a.high:+.4f}], p = {a.p_value:.3g}"
        + (" (significant at 5%)" if a.p_value < 0.05 else " (not significant at 5%)"),
        f"value per decision uplift: {v.value:+.3f}, 95% interval [{v.low:+.3f}, {v.high:+.3f}],"
        f" p = {v.p_value:.3g}",
        f"sample ratio: {seen:.2%} of customers in the challenger arm, p = {r.srm_p_value:.3g}: "
        + (
            "SAMPLE RATIO MISMATCH: the assignment or the logging is broken;"
            " do not trust the uplift"
            if r.sample_ratio_mismatch
            else "no mismatch"
        ),
    ]
    return "\n".join(lines)


def _two_sided(z: float) -> float:
    return float(2 * stats.norm.sf(abs(z)))


def write_report(r: Report, path: Path) -> None:
    """The experiment as HTML: acceptance and value per decision per arm with 95%
    intervals, and the text report."""
    from training import figures

    arms_ = (r.champion, r.challenger)
    names = [f"{a.name}\n({a.customers} customers)" for a in arms_]
    rates = [a.acceptance for a in arms_]
    half = [1.96 * math.sqrt(a.acceptance * (1 - a.acceptance) / max(a.decisions, 1))
            for a in arms_]  # fmt: skip
    values = [a.value for a in arms_]
    spread = [
        1.96 * float(a.values.std(ddof=1)) / math.sqrt(a.values.size) if a.values.size > 1 else 0.0
        for a in arms_
    ]
    sections = [
        (
            "Acceptance per decision, by arm",
            figures.arms(
                names, rates, [p - h for p, h in zip(rates, half, strict=True)],
                [p + h for p, h in zip(rates, half, strict=True)],
                "acceptance per decision", "95% intervals",
            ),
        ),
        (
            "Value per decision, by arm",
            figures.arms(
                names, values, [v - h for v, h in zip(values, spread, strict=True)],
                [v + h for v, h in zip(values, spread, strict=True)],
                "value per decision", "95% intervals",
            ),
        ),
    ]  # fmt: skip
    path.write_text(figures.page(f"Experiment: challenger {r.experiment}", sections, text(r)))
