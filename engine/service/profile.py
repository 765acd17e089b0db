"""The single customer view that `GetProfile` answers: features, stage and why, recent
events across channels, and the offers made with the outcomes reported for them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from feature_store.store import CustomerHistory


@dataclass(frozen=True, slots=True)
class OfferHistory:
    """One offer made in one decision, with the outcomes reported for it."""

    decision_id: str
    offer_id: str
    channel: str
    placement: str
    rank: int
    decided_at: float
    outcomes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Profile:
    customer_id: str
    known: bool
    stage: str
    stage_reason: str
    features: Mapping[str, float]
    attributes: Mapping[str, str]
    events: Sequence[Mapping[str, Any]]
    decisions: tuple[OfferHistory, ...]


def offer_history(history: CustomerHistory) -> tuple[OfferHistory, ...]:
    """Joins the customer's recent decisions with their outcomes, newest first."""
    reported: dict[tuple[str, str], list[str]] = {}
    for o in reversed(history.outcomes):  # stored newest first; keep oldest first
        reported.setdefault((o["decision_id"], o["offer_id"]), []).append(o["outcome"])
    return tuple(
        OfferHistory(
            decision_id=d["decision_id"],
            offer_id=offer_id,
            channel=d["channel"],
            placement=d["placement"],
            rank=rank,
            decided_at=d["ts"],
            outcomes=tuple(reported.get((d["decision_id"], offer_id), ())),
        )
        for d in history.decisions
        for offer_id, rank in d["actions"]
    )
