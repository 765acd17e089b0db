"""What a simulated day measured, and its presentation: the text table with the
estimators' errors, an HTML page with an SVG chart, and a CSV."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

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
class Retrain:
    """One scheduled retrain inside a simulated day."""

    after: int  # decisions served that day before it ran
    version: str  # the model it trained ("" when the run stopped: nothing to judge on)
    promoted: bool
    why: str
    lift: Estimate | None = None  # estimated value lift over the champion (paired DR)
    true_lift: float | None = None  # the same by the hidden model, on the same decisions


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
    retrains: tuple[Retrain, ...] = ()
    peers: Mapping[str, PeerDay] = field(default_factory=dict)  # name -> the same day
    # (the model's propensity, the true probability) of each served offer
    calibration: tuple[tuple[float, float], ...] = field(default=(), repr=False)


def promotions(result: DayResult) -> int:
    return sum(r.promoted for r in result.retrains)


LEGEND = """\
value per decision, by the hidden response model: served (the policy's choices), greedy
(the batch model's own best), oracle (the best candidate knowing every hidden trait),
random, value-only; served/oracle and greedy/oracle as shares; realised: the value of the
answers drawn, per decision; acceptance: drawn, expected: by the hidden model; promoted:
retrains promoted of those run that day"""


def table(results: Sequence[DayResult]) -> str:
    """One line per day, then how the retrains' lift estimates compare with the true lift
    (by the hidden model, on the decisions each was judged on)."""
    lines = [
        "day  decisions  served  greedy  oracle  random  value-only  served/oracle"
        "  greedy/oracle  realised  acceptance  expected  promoted",
    ]
    for r in results:
        lines.append(
            f"{r.day:>3}  {r.decisions:>9}  {r.policy:6.2f}  {r.greedy:6.2f}  {r.oracle:6.2f}"
            f"  {r.random:6.2f}  {r.value_only:10.2f}  {_share(r.policy, r.oracle):>13}"
            f"  {_share(r.greedy, r.oracle):>13}  {r.realised:8.2f}  {r.acceptance:10.4f}"
            f"  {r.expected_acceptance:8.4f}  {promotions(r):>3} of {len(r.retrains):<3}"
        )
    judged = [
        t for r in results for t in r.retrains if t.lift is not None and t.true_lift is not None
    ]
    if judged:
        covered = sum(
            t.lift.low <= t.true_lift <= t.lift.high
            for t in judged
            if t.lift and t.true_lift is not None
        )
        promoted = [t for t in judged if t.promoted]
        worse = sum(t.true_lift < 0 for t in promoted if t.true_lift is not None)
        lines.append(
            f"lift estimates (paired DR): the true lift inside the 95% interval {covered} of"
            f" {len(judged)}; {len(promoted)} promoted, {worse} of them truly worse than their"
            " champion on the decisions they were judged on"
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
    judged = [
        (f"day {r.day}, after {t.after}", t.lift, t.true_lift)
        for r in results
        for t in r.retrains
        if t.lift is not None and t.true_lift is not None
    ]
    if judged:
        sections.append(
            (
                "Each retrain's estimated lift over its champion, against the truth",
                figures.estimates_against_truth(
                    [label for label, _, _ in judged],
                    [(e.value, e.low, e.high) for _, e, _ in judged if e is not None],
                    {"true lift": [float(t) for _, _, t in judged if t is not None]},
                    "value per decision, challenger - champion",
                    "Paired DR with its 95% interval; the hidden model's lift on the same"
                    " decisions",
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
        "expected_acceptance,retrains,promotions\n"
        + "".join(
            f"{r.day},{r.model_version},{r.decisions},{r.policy:.4f},{r.greedy:.4f},"
            f"{r.oracle:.4f},{r.random:.4f},{r.value_only:.4f},{r.realised:.4f},"
            f"{r.acceptance:.4f},{r.expected_acceptance:.4f},{len(r.retrains)},"
            f"{promotions(r)}\n"
            for r in results
        )
    )
