"""What a simulated day measured, and its presentation: the text table with the
estimators' errors, an HTML page with an SVG chart, and a CSV."""

from __future__ import annotations

import html
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

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
    ope_next: Estimate | None = None  # SNIPS acceptance of tomorrow's policy, from the logs
    ope_next_dr: Estimate | None = None  # the doubly robust estimate of the same
    ope_truth: float | None = None  # its true value on the decisions it was estimated from
    peers: Mapping[str, PeerDay] = field(default_factory=dict)  # name -> the same day


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


def write_report(results: Sequence[DayResult], path: Path) -> None:
    """An HTML page with the table and an SVG chart of value per decision by day."""
    series = {
        "served": ([r.policy for r in results], "#1f6feb"),
        "greedy": ([r.greedy for r in results], "#8250df"),
        "oracle": ([r.oracle for r in results], "#1a7f37"),
        "value-only": ([r.value_only for r in results], "#9a6700"),
        "random": ([r.random for r in results], "#b42318"),
    }
    width, height, pad = 640, 320, 40
    top = max(max(v) for v, _ in series.values()) * 1.1 or 1.0
    days = len(results)

    def point(i: int, v: float) -> str:
        x = pad + (width - 2 * pad) * (i / max(days - 1, 1))
        y = height - pad - (height - 2 * pad) * (v / top)
        return f"{x:.1f},{y:.1f}"

    lines = []
    for name, (values, color) in series.items():
        points = " ".join(point(i, v) for i, v in enumerate(values))
        lines.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{points}"/>')
        lines.append(
            f'<text x="{width - pad + 4}" y="{point(days - 1, values[-1]).split(",")[1]}" '
            f'fill="{color}" font-size="12">{html.escape(name)}</text>'
        )
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width + 80}" height="{height}">'
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}"'
        ' stroke="#999"/>'
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#999"/>'
        f'<text x="{pad}" y="{pad - 10}" font-size="12">value per decision (max {top:.1f})</text>'
        + "".join(lines)
        + "</svg>"
    )
    path.write_text(
        "<!doctype html><meta charset=utf-8><title>Arbiter simulation</title>"
        "<body style='font-family:system-ui'><h1>Arbiter: the closed loop, by day</h1>"
        f"{svg}<pre>{html.escape(table(results))}</pre></body>"
    )


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
