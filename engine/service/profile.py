"""The single customer view that `GetProfile` answers: features, stage and why, recent
events across channels, and the offers made with the outcomes reported for them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.core import consent
from engine.core.contact_views import CapUse, OfferState
from engine.core.customer import CustomerRecord
from engine.core.triggers import Pending
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
    stage: str = ""


@dataclass(frozen=True, slots=True)
class StageTransition:
    from_stage: str
    to_stage: str
    at: float
    reason: str


@dataclass(frozen=True, slots=True)
class ConsentView:
    channel: str
    given: bool
    source: str  # "event" or "batch"
    at: float  # 0 for a batch value
    via: str  # the channel an event came through; "" for batch


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
    contact_state: tuple[OfferState, ...] = ()
    channel_caps: tuple[CapUse, ...] = ()
    consent: tuple[ConsentView, ...] = ()
    stage_transitions: tuple[StageTransition, ...] = ()
    pending_triggers: tuple[Pending, ...] = ()  # soonest first


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
            stage=d.get("stage", ""),
        )
        for d in history.decisions
        for offer_id, rank in d["actions"]
    )


def stage_transitions(history: CustomerHistory) -> tuple[StageTransition, ...]:
    """Where the stage of the customer's recent decisions changed, oldest first."""
    out, previous = [], None
    for d in reversed(history.decisions):  # stored newest first
        stage = d.get("stage")
        if stage and previous is not None and stage != previous:
            out.append(StageTransition(previous, stage, d["ts"], d.get("stage_reason", "")))
        previous = stage or previous
    return tuple(out)


def consent_views(
    record: CustomerRecord, values: Mapping[str, Any], consent_features: Mapping[str, str]
) -> tuple[ConsentView, ...]:
    """Each consent channel's state: the event that decides it, or the batch value."""
    out = []
    for channel, feature in consent_features.items():
        event = consent.latest_event(record, channel)
        if event is not None:
            out.append(ConsentView(channel, event.given, "event", event.at, event.via))
        else:
            out.append(ConsentView(channel, values[feature] >= 0.5, "batch", 0.0, ""))
    return tuple(out)
