"""Event triggers: a customer's event that makes Arbiter reach out, at the right time.

Declared in the catalog (``[[trigger]]``): the event types it reacts to, a condition in
the rule language (``context.<name>``: the event's attributes; the profile's features and
``attr.<name>`` as in any rule; ``channel``: the event's channel), the channels it may send
on (tried in order), the offers it may choose among (all when absent), a delay, the event
types that cancel it while it waits, and how long after firing it may fire again for the
same customer. ``RecordEvent`` of a matching event schedules it (feature_store/triggers.py);
the scheduler (engine/service/trigger_scheduler.py) decides it when due with the ordinary
decision core, the trigger's id in the request's context.

Pure: no I/O here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from common.errors import ConfigurationError
from common.vocabulary import CHANNELS
from engine.core.expression import Expression, compile_expression
from engine.core.tables import known, names

TRIGGER_KEYS = (
    "id", "events", "when", "channels", "offers", "placement", "delay_minutes", "cancel_on",
    "reeligible_hours",
)  # fmt: skip
DEFAULT_REELIGIBLE_HOURS = 24.0
# The event attributes a pending trigger keeps (and its decision's context shows)
MAX_EVENT_ATTRIBUTES = 16
MAX_ATTRIBUTE_CHARS = 200


@dataclass(frozen=True, slots=True)
class Trigger:
    trigger_id: str
    events: frozenset[str]  # event types that schedule it
    condition: Expression | None  # over the event (context, channel) and the profile
    channels: tuple[str, ...]  # tried in order: the first with an answer sends
    offers: tuple[str, ...] = ()  # the offers it may choose among; () all
    placement: str = ""
    delay_seconds: float = 0.0
    cancel_on: frozenset[str] = frozenset()  # event types that cancel it while it waits
    reeligible_seconds: float = DEFAULT_REELIGIBLE_HOURS * 3600


@dataclass(frozen=True, slots=True)
class Pending:
    """A trigger scheduled for a customer: what the scheduler fires when ``due``."""

    schedule_id: str  # unique per scheduling: the stream message's idempotency key
    trigger_id: str
    customer_id: str
    event_type: str
    event: Mapping[str, str]  # the event's attributes (bounded)
    scheduled_at: float  # unix seconds
    due: float  # unix seconds; moved later when quiet hours defer it

    def to_json(self) -> str:
        return json.dumps(
            {
                "id": self.schedule_id,
                "trigger": self.trigger_id,
                "customer": self.customer_id,
                "event_type": self.event_type,
                "event": dict(self.event),
                "scheduled": self.scheduled_at,
                "due": self.due,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> Pending:
        doc = json.loads(raw)
        return cls(
            str(doc["id"]),
            str(doc["trigger"]),
            str(doc["customer"]),
            str(doc["event_type"]),
            {str(k): str(v) for k, v in doc.get("event", {}).items()},
            float(doc["scheduled"]),
            float(doc["due"]),
        )


def kept_attributes(attributes: Mapping[str, str]) -> dict[str, str]:
    """The event attributes a pending trigger keeps: the first few, each bounded."""
    return {
        str(k)[:MAX_ATTRIBUTE_CHARS]: str(v)[:MAX_ATTRIBUTE_CHARS]
        for k, v in list(attributes.items())[:MAX_EVENT_ATTRIBUTES]
    }


@dataclass(frozen=True)
class Triggers:
    """The catalog's triggers, indexed by the event types that schedule and cancel them."""

    all: tuple[Trigger, ...] = ()
    by_id: Mapping[str, Trigger] = field(init=False)
    scheduled_by: Mapping[str, tuple[Trigger, ...]] = field(init=False)
    cancelled_by: Mapping[str, tuple[Trigger, ...]] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_id", {t.trigger_id: t for t in self.all})
        scheduled: dict[str, list[Trigger]] = {}
        cancelled: dict[str, list[Trigger]] = {}
        for t in self.all:
            for event in t.events:
                scheduled.setdefault(event, []).append(t)
            for event in t.cancel_on:
                cancelled.setdefault(event, []).append(t)
        object.__setattr__(self, "scheduled_by", {k: tuple(v) for k, v in scheduled.items()})
        object.__setattr__(self, "cancelled_by", {k: tuple(v) for k, v in cancelled.items()})

    def __bool__(self) -> bool:
        return bool(self.all)

    def reacting_to(self, event_type: str) -> bool:
        """Whether an event of this type schedules or cancels any trigger."""
        return event_type in self.scheduled_by or event_type in self.cancelled_by

    def matching(self, event_type: str, env: Mapping[str, Any]) -> list[Trigger]:
        """The triggers an event of ``event_type`` schedules, their conditions true in
        ``env`` (the rule environment of the customer and the event)."""
        return [
            t
            for t in self.scheduled_by.get(event_type, ())
            if t.condition is None or bool(t.condition(env))
        ]


def parse_triggers(
    raw: Sequence[Mapping[str, Any]], feature_names: frozenset[str], offer_ids: frozenset[str]
) -> Triggers:
    """The catalog's ``[[trigger]]`` tables."""
    out = []
    for i, table in enumerate(raw):
        tid = str(table.get("id", "")).strip()
        where = f"trigger {tid or i}"
        if not tid:
            raise ConfigurationError(f"{where}: no id")
        known(table, TRIGGER_KEYS, where)
        events = frozenset(str(e) for e in table.get("events", ()))
        if not events or not all(events):
            raise ConfigurationError(f"{where}.events: at least one event type")
        channels = tuple(str(c) for c in table.get("channels", ()))
        names(channels, CHANNELS, f"{where}.channels")
        if not channels:
            raise ConfigurationError(f"{where}.channels: at least one channel")
        offers = tuple(str(o) for o in table.get("offers", ()))
        unknown = sorted(set(offers) - offer_ids)
        if unknown:
            raise ConfigurationError(f"{where}.offers: no offer {', '.join(unknown)}")
        try:
            delay = float(table.get("delay_minutes", 0)) * 60
            again = float(table.get("reeligible_hours", DEFAULT_REELIGIBLE_HOURS)) * 3600
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"{where}: {exc}") from exc
        if delay < 0 or again < 0:
            raise ConfigurationError(f"{where}: delay_minutes and reeligible_hours >= 0")
        when = table.get("when")
        out.append(
            Trigger(
                trigger_id=tid,
                events=events,
                condition=compile_expression(str(when), feature_names) if when else None,
                channels=channels,
                offers=offers,
                placement=str(table.get("placement", "")),
                delay_seconds=delay,
                cancel_on=frozenset(str(e) for e in table.get("cancel_on", ())),
                reeligible_seconds=again,
            )
        )
    ids = [t.trigger_id for t in out]
    if len(set(ids)) != len(ids):
        raise ConfigurationError("catalog: duplicate trigger ids")
    return Triggers(tuple(out))
