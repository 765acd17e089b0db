"""What the simulation changes mid-run, and how fast the served policy follows.

- A new offer (``--new-offer-day``): added to the catalog at the start of that day, unknown
  to every model. Followed when, over the last ``WINDOW`` decisions, it is served at least
  ``NEW_SHARE`` of the share the oracle gives it on the same decisions.
- An offer's appeal halved (``--halve-offer`` on ``--halve-day``): its true response
  probability is halved from the start of that day. Followed when its served share over
  the last ``WINDOW`` decisions has come down at least ``HALVED_SHARE`` of the way from
  where it was (the ``WINDOW`` decisions before) to the oracle's share now.

Measured in decisions after the change, and in simulated hours (a day's decisions spread
evenly over 24 hours); None when the run ended first.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

WINDOW = 250
NEW_SHARE = 0.8
HALVED_SHARE = 0.8


@dataclass(frozen=True)
class Followed:
    event: str  # "new offer" or "appeal halved"
    offer: str
    day: int
    decisions: int | None  # after the change, until the served share followed
    hours: float | None
    oracle_share: float  # the oracle's share of the offer over the rest of that day
    served_share: float  # the served policy's, over the same decisions
    value_share: float  # the served policy's value / the oracle's, that day
    value_share_before: float  # the same, the day before


def _shares(trace: Sequence[tuple[str, str]], offer: str) -> tuple[np.ndarray, np.ndarray]:
    served = np.array([s == offer for s, _ in trace], dtype=float)
    oracle = np.array([o == offer for _, o in trace], dtype=float)
    return served, oracle


def _rolling(x: np.ndarray, window: int) -> np.ndarray:
    """Means of x[i - window : i] for i = window .. len(x)."""
    total = np.concatenate([[0.0], np.cumsum(x)])
    return np.asarray((total[window:] - total[:-window]) / window)


def followed(
    trace: Sequence[tuple[str, str]], offer: str, start: int, *, halved: bool
) -> int | None:
    """Decisions from ``start`` until the served share of ``offer`` followed the change."""
    served, oracle = _shares(trace, offer)
    if len(trace) - start < WINDOW:
        return None
    after_s = _rolling(served[start:], WINDOW)
    after_o = _rolling(oracle[start:], WINDOW)
    if halved:
        before = float(served[max(start - WINDOW, 0) : start].mean()) if start else 0.0
        done = after_s <= before - HALVED_SHARE * np.maximum(before - after_o, 0.0)
    else:
        done = (after_s >= NEW_SHARE * after_o) & (after_o > 0)
    hits = np.flatnonzero(done)
    return int(hits[0]) + WINDOW if hits.size else None


def measure(
    event: str,
    offer: str,
    day: int,
    trace: Sequence[tuple[str, str]],
    day_starts: dict[int, int],
    value_shares: dict[int, float],
) -> Followed:
    start = day_starts[day]
    end = day_starts.get(day + 1, len(trace))
    per_hour = (end - start) / 24
    decisions = followed(trace, offer, start, halved=event == "appeal halved")
    served, oracle = _shares(trace[start:end], offer)
    return Followed(
        event,
        offer,
        day,
        decisions,
        None if decisions is None else decisions / per_hour,
        float(oracle.mean()) if oracle.size else 0.0,
        float(served.mean()) if served.size else 0.0,
        value_shares.get(day, float("nan")),
        value_shares.get(day - 1, float("nan")),
    )


def describe(f: Followed) -> str:
    when = (
        "not within the run"
        if f.decisions is None
        else f"after {f.decisions} decisions ({f.hours:.1f} simulated hours)"
    )
    target = "served at 80% of its oracle share" if f.event == "new offer" else "its share followed"
    return (
        f"{f.event} {f.offer} on day {f.day}: {target} {when}; that day served"
        f" {f.served_share:.1%} (oracle {f.oracle_share:.1%}); value {f.value_share:.1%} of"
        f" the oracle's (day before {f.value_share_before:.1%})"
    )


def write_csv(events: Sequence[Followed], path: Path) -> None:
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(Followed.__dataclass_fields__))
        writer.writeheader()
        for f in events:
            writer.writerow(asdict(f))


def read_csv(path: Path) -> list[Followed]:
    if not path.exists():
        return []
    with path.open() as source:
        rows = list(csv.DictReader(source))

    def number(text: str) -> float | None:
        return None if text in ("", "None") else float(text)

    return [
        Followed(
            r["event"],
            r["offer"],
            int(r["day"]),
            None if (d := number(r["decisions"])) is None else int(d),
            number(r["hours"]),
            float(r["oracle_share"]),
            float(r["served_share"]),
            float(r["value_share"]),
            float(r["value_share_before"]),
        )
        for r in rows
    ]
