"""`arbiter simulate --compare arbiter,vw,value,random`: the closed loop once per seed
(a world, its traffic and the first model's logs each), every peer choosing among the
same candidates as the served policy; per day and policy the value served as a share of
the oracle's, the acceptance rate and the regret per decision, with 95% intervals over
the seeds (Student's t), and Arbiter's lead over each peer paired by seed."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy import stats

from training.simulation.peers import PEERS
from training.simulation.report import DayResult, PeerDay

POLICIES = ("arbiter", *PEERS)


def start_before(
    tree: Path,
    out: Path,
    *,
    seeds: int,
    days: int,
    customers: int,
    world: int,
    policy: str,
    epsilon: float,
    temperature: float,
    extra: Sequence[str] = (),
) -> subprocess.Popen[bytes]:
    """An earlier checkout's own `arbiter simulate --compare arbiter` on seeds 1..``seeds``
    (its gRPC code generated, this environment's packages), writing into ``out``; its
    output goes to ``out``/simulate.log."""
    out.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "training.cli", "simulate", "--compare", "arbiter",
        "--seeds", str(seeds), "--days", str(days), "--customers", str(customers),
        "--world", str(world), "--policy", policy, "--epsilon", str(epsilon),
        "--temperature", str(temperature), "--out", str(out.resolve()), *extra,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(tree.resolve())}
    with (out / "simulate.log").open("wb") as log:
        return subprocess.Popen(command, cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT)


def join_before(
    process: subprocess.Popen[bytes],
    out: Path,
    runs: Sequence[Sequence[DayResult]],
    seeds: Sequence[int],
) -> list[list[DayResult]]:
    """Waits for the earlier checkout's run and adds its Arbiter to each day as the peer
    "before". Its worlds and traffic are this run's, but its own choices shaped its own
    candidates (caps, cool-downs): its share of *its* oracle is what is kept (its value
    is that share of this run's oracle)."""
    if process.wait() != 0:
        raise RuntimeError(f"the earlier checkout's simulation failed: see {out / 'simulate.log'}")
    shares: dict[tuple[int, int], tuple[float, float]] = {}
    for line in (out / "compare.csv").read_text().splitlines()[1:]:
        cells = line.split(",")
        if cells[2] == "arbiter":
            shares[(int(cells[0]), int(cells[1]))] = (float(cells[5]), float(cells[6]))
    joined = []
    for seed, run in zip(seeds, runs, strict=True):
        days = []
        for r in run:
            share, acceptance = shares[(seed, r.day)]
            value = share * r.oracle
            days.append(
                replace(r, peers={**r.peers, "before": PeerDay(value, acceptance, acceptance)})
            )
        joined.append(days)
    return joined


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Interval:
        """The mean and its 95% t-interval; a single value is its own interval."""
        a = np.asarray(values, dtype=np.float64)
        mean = float(a.mean())
        if a.size < 2:
            return cls(mean, mean, mean)
        half = float(stats.t.ppf(0.975, a.size - 1) * a.std(ddof=1) / np.sqrt(a.size))
        return cls(mean, mean - half, mean + half)

    def format(self, scale: float = 1.0, digits: int = 1, unit: str = "") -> str:
        m, lo, hi = (x * scale for x in (self.mean, self.low, self.high))
        return f"{m:.{digits}f}{unit} [{lo:.{digits}f}, {hi:.{digits}f}]"


def measures(result: DayResult, policy: str) -> tuple[float, float, float]:
    """A policy's (value / oracle, acceptance, regret per decision) on a day."""
    if policy == "arbiter":
        value, acceptance = result.policy, result.acceptance
    else:
        peer = result.peers[policy]
        value, acceptance = peer.value, peer.acceptance
    share = value / result.oracle if result.oracle else 0.0
    return share, acceptance, result.oracle - value


@dataclass(frozen=True)
class Row:
    day: int
    policy: str
    share: Interval  # value served / the oracle's
    acceptance: Interval
    regret: Interval  # the oracle's value minus the policy's, per decision


def rows(runs: Sequence[Sequence[DayResult]], policies: Sequence[str]) -> list[Row]:
    """``runs``: one list of days per seed."""
    days = min(len(r) for r in runs)
    out = []
    for d in range(days):
        for policy in policies:
            m = [measures(run[d], policy) for run in runs]
            out.append(
                Row(
                    d + 1,
                    policy,
                    Interval.of([x[0] for x in m]),
                    Interval.of([x[1] for x in m]),
                    Interval.of([x[2] for x in m]),
                )
            )
    return out


def leads(runs: Sequence[Sequence[DayResult]], peer: str) -> list[Interval]:
    """Arbiter's value share minus ``peer``'s, per day, paired by seed."""
    days = min(len(r) for r in runs)
    return [
        Interval.of([measures(run[d], "arbiter")[0] - measures(run[d], peer)[0] for run in runs])
        for d in range(days)
    ]


def table(
    runs: Sequence[Sequence[DayResult]], policies: Sequence[str], seeds: Sequence[int]
) -> str:
    lines = [
        f"per day and policy, mean [95% interval] over seeds {', '.join(map(str, seeds))}:",
        f"{'day':>3}  {'policy':8s}  {'value / oracle':>22s}  {'acceptance':>26s}"
        f"  {'regret / decision':>22s}",
    ]
    for r in rows(runs, policies):
        lines.append(
            f"{r.day:>3}  {r.policy:8s}  {r.share.format(100, 1, '%'):>22s}"
            f"  {r.acceptance.format(1, 4):>26s}  {r.regret.format(1, 2):>22s}"
        )
    for peer in (p for p in policies if p != "arbiter"):
        per_day = leads(runs, peer)
        ahead = [d + 1 for d, i in enumerate(per_day) if i.low > 0]
        lines.append(
            f"arbiter - {peer}, value / oracle by day (points): "
            + ", ".join(i.format(100, 1) for i in per_day)
            + f"; ahead beyond the interval on day {', '.join(map(str, ahead)) or 'none'}"
        )
    return "\n".join(lines)


def write_csv(
    runs: Sequence[Sequence[DayResult]], policies: Sequence[str], seeds: Sequence[int], path: Path
) -> None:
    lines = ["seed,day,policy,value,oracle,value_over_oracle,acceptance,regret"]
    for seed, run in zip(seeds, runs, strict=True):
        for r in run:
            for policy in policies:
                share, acceptance, regret = measures(r, policy)
                value = r.oracle - regret
                lines.append(
                    f"{seed},{r.day},{policy},{value:.4f},{r.oracle:.4f},{share:.4f},"
                    f"{acceptance:.4f},{regret:.4f}"
                )
    path.write_text("\n".join(lines) + "\n")


def write_report(
    runs: Sequence[Sequence[DayResult]], policies: Sequence[str], seeds: Sequence[int], path: Path
) -> None:
    """The head-to-head as HTML: value / oracle and regret by day per policy, each with
    its 95% interval over the seeds, and the table."""
    from training import figures

    found = rows(runs, policies)
    days = sorted({r.day for r in found})

    Bands = dict[str, tuple[list[float], list[float]]]

    def series(measure: str) -> tuple[dict[str, list[float]], Bands]:
        means: dict[str, list[float]] = {}
        bands: Bands = {}
        for policy in policies:
            mine = [getattr(r, measure) for r in found if r.policy == policy]
            means[policy] = [i.mean for i in mine]
            bands[policy] = ([i.low for i in mine], [i.high for i in mine])
        return means, bands

    share, share_bands = series("share")
    regret, regret_bands = series("regret")
    seeds_text = ", ".join(map(str, seeds))
    sections = [
        (
            "Value served, as a share of the oracle's",
            figures.lines_by_day(
                days, share, "value / oracle", f"Mean and 95% interval over seeds {seeds_text}",
                share_bands, percent=True,
            ),
        ),
        (
            "Regret per decision",
            figures.lines_by_day(
                days, regret, "oracle's value - the policy's", "Lower is better", regret_bands
            ),
        ),
    ]  # fmt: skip
    path.write_text(
        figures.page("Arbiter against its peers", sections, table(runs, policies, seeds))
    )
