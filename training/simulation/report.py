"""What a simulated day measured, and its presentation: the text table with the
estimators' errors, an HTML page with an SVG chart, and a CSV."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.adapters.artifact import ModelArtifact
from training import figures
from training.evaluation import Estimate


@dataclass(frozen=True)
class PeerDay:
    """A peer policy's day, on the same decisions as the served policy."""

    value: float  # expected value per decision of its choices (hidden model)
    acceptance: float  # its choices accepted (drawn as the served policy's) / decisions
    expected_acceptance: float


@dataclass(frozen=True)
class DayResult:
    day: int
    model_version: str
    decisions: int
    policy: float  # expected value per decision of the served (exploring) policy
    greedy: float  # the same of the promoted model's own choice, without exploration
    oracle: float
    random: float
    value_only: float
    realised: float  # value per decision actually earned
    acceptance: float  # accepted decisions / decisions
    expected_acceptance: float  # mean true acceptance probability of the served offers
    next_model: str = ""
    promoted: bool = False
    why: str = ""  # why the next model was (not) promoted
    ope_next: Estimate | None = None  # SNIPS acceptance of tomorrow's policy, from the logs
    ope_next_dr: Estimate | None = None  # the doubly robust estimate of the same
    ope_truth: float | None = None  # its true value on the decisions it was estimated from
    peers: Mapping[str, PeerDay] = field(default_factory=dict)  # name -> the same day
    # (the model's propensity, the true probability) of each served offer
    calibration: tuple[tuple[float, float], ...] = field(default=(), repr=False)


def table(results: Sequence[DayResult]) -> str:
    """One line per day, then how far each off-policy estimate was from what its policy
    then realised, and from its own estimand (the policy's true value, by the hidden
    model, on the decisions the estimate was computed from)."""
    lines = [
        "day  decisions  served  greedy  oracle  random  value-only  served/oracle"
        "  greedy/oracle  realised  acceptance  expected  promoted  OPE of tomorrow's acceptance",
    ]
    for r in results:
        ope = str(r.ope_next) if r.ope_next else "-"
        lines.append(
            f"{r.day:>3}  {r.decisions:>9}  {r.policy:6.2f}  {r.greedy:6.2f}  {r.oracle:6.2f}"
            f"  {r.random:6.2f}  {r.value_only:10.2f}  {_share(r.policy, r.oracle):>13}"
            f"  {_share(r.greedy, r.oracle):>13}  {r.realised:8.2f}  {r.acceptance:10.4f}"
            f"  {r.expected_acceptance:8.4f}  {'yes' if r.promoted else 'no':>8}  {ope}"
        )
    for name, attribute in (("SNIPS", "ope_next"), ("DR", "ope_next_dr")):
        pairs = [
            (estimate, a, b)
            for a, b in itertools.pairwise(results)
            if (estimate := getattr(a, attribute)) is not None and b.acceptance
        ]
        if not pairs:
            continue
        realised = [abs(e.value - b.acceptance) / b.acceptance for e, _, b in pairs]
        covered = sum(e.low <= b.acceptance <= e.high for e, _, b in pairs)
        own = [abs(e.value - a.ope_truth) / a.ope_truth for e, a, _ in pairs if a.ope_truth]
        lines.append(
            f"{name} estimate of the next day's acceptance: off the realised by mean"
            f" {np.mean(realised):.1%}, worst {max(realised):.1%} (inside its 95% interval"
            f" {covered} of {len(pairs)} days)"
            + (
                f"; off its true value on the decisions it was estimated from by mean"
                f" {np.mean(own):.1%}, worst {max(own):.1%}"
                if own
                else ""
            )
        )
    return "\n".join(lines)


def _share(part: float, whole: float) -> str:
    return f"{part / whole:.1%}" if whole else "-"


def write_report(
    results: Sequence[DayResult], path: Path, model: ModelArtifact | None = None
) -> None:
    """An HTML page: value per decision by day per policy, the off-policy estimates of
    each next day's acceptance against what it realised, the serving model's calibration
    against the hidden truth, its feature importance (``model``), and the table."""
    days = [r.day for r in results]
    series = {
        "served": [r.policy for r in results],
        "greedy": [r.greedy for r in results],
        "oracle": [r.oracle for r in results],
        "value-only": [r.value_only for r in results],
        "random": [r.random for r in results],
    }
    for name in results[0].peers if results else ():
        if name not in ("value", "random"):  # those two are the baselines above
            series[name] = [r.peers[name].value for r in results]
    sections = [
        (
            "Value per decision, by day",
            figures.lines_by_day(
                days, series, "expected value per decision", "Policies on the same decisions"
            ),
        )
    ]
    labels: list[str] = []
    estimates: list[tuple[float, float, float]] = []
    realised: list[float] = []
    for a, b in itertools.pairwise(results):
        for name, e in (("SNIPS", a.ope_next), ("DR", a.ope_next_dr)):
            if e is not None:
                labels.append(f"day {b.day}, {name} (from day {a.day})")
                estimates.append((e.value, e.low, e.high))
                realised.append(b.acceptance)
    if labels:
        sections.append(
            (
                "Off-policy estimates of the next day's acceptance",
                figures.estimates_against_truth(
                    labels,
                    estimates,
                    {"realised the next day": realised},
                    "acceptance per decision",
                    "Estimated before the day, against what it realised",
                ),
            )
        )
    served = [c for r in results[-1:] for c in r.calibration]
    if served:
        sections.append(
            (
                "Calibration of the serving model",
                figures.calibration(
                    [c[0] for c in served],
                    [c[1] for c in served],
                    f"Day {results[-1].day}: served offers ({len(served)})",
                ),
            )
        )
    if model is not None:
        import lightgbm as lgb

        booster = lgb.Booster(model_str=model.model_text)
        sections.append(
            (
                "What the model learned from",
                figures.importance(
                    booster.feature_name(),
                    booster.feature_importance("gain").tolist(),
                    f"Feature importance, model {model.version}",
                ),
            )
        )
    path.write_text(figures.page("Arbiter: the closed loop, by day", sections, table(results)))


def write_csv(results: Sequence[DayResult], path: Path) -> None:
    path.write_text(
        "day,model,decisions,served,greedy,oracle,random,value_only,realised,acceptance,"
        "expected_acceptance,promoted,ope_next,ope_next_dr,ope_truth\n"
        + "".join(
            f"{r.day},{r.model_version},{r.decisions},{r.policy:.4f},{r.greedy:.4f},"
            f"{r.oracle:.4f},{r.random:.4f},{r.value_only:.4f},{r.realised:.4f},"
            f"{r.acceptance:.4f},{r.expected_acceptance:.4f},{r.promoted},"
            f"{r.ope_next.value if r.ope_next else ''},"
            f"{r.ope_next_dr.value if r.ope_next_dr else ''},"
            f"{'' if r.ope_truth is None else r.ope_truth}\n"
            for r in results
        )
    )
