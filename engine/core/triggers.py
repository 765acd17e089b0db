"""Event triggers: a customer's event that makes Arbiter reach out, at the right time.

Declared in the catalog (``[[trigger]]``): the event types it reacts to, a condition in
the rule language (``context.<name>``: the event's attributes; the profile's features and
``attr.<name>`` as in any rule; ``channel``: the event's channel), the channels it may send
on (tried in order), the offers it may choose among (all when absent), a delay, the event
types that cancel it while it waits, and how long after firing it may fire again for the
same customer. ``RecordEvent`` of a matching event schedules it (feature_store/triggers.py);
the scheduler (engine/service/trigger_scheduler.py) decides it when due with the ordinary
decision core, the trigger's id in the request's context.

Always-on outbound (``[[outbound]]``, a ``Run``): on its days, every customer of a segment
(a rule over the profile) is sent the best of its offers at a time of day in their own
zone. Each day's run goes over the customer base once and schedules, for each customer of
the segment, a trigger of the run's id due at that time (engine/service/outbound_runs.py);
from there it is fired as any trigger.

Pure: no I/O here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
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
RUN_KEYS = (
    "id", "segment", "channels", "offers", "placement", "at", "days", "reeligible_hours",
)  # fmt: skip
# A run's sends to one customer are at least this far apart: one a day, even when two
# replicas' clocks disagree about whether today's time has passed
DEFAULT_RUN_REELIGIBLE_HOURS = 12.0
RUN_EVENT = "outbound_run"  # the event type a run's pending triggers carry
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
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
class Run:
    """Always-on outbound: on ``days``, each customer of ``segment`` (all when None) is sent
    at ``at_minute`` past midnight in their own zone, fired as ``trigger`` (the run's id,
    channels, offers, placement and re-eligibility)."""

    trigger: Trigger
    segment: Expression | None
    at_minute: int
    days: frozenset[int]  # datetime.weekday() numbers

    @property
    def run_id(self) -> str:
        return self.trigger.trigger_id

    def next_send(self, zone: tzinfo, now: float) -> float:
        """The first moment at or after ``now`` that is the run's time of day, on one of
        its days, in ``zone`` (a time that does not exist that day, in a clock change,
        is read as the zone's rules read it: the hour after)."""
        today = datetime.fromtimestamp(now, zone).date()
        hour, minute = divmod(self.at_minute, 60)
        for ahead in range(8):
            day = today + timedelta(days=ahead)
            if day.weekday() not in self.days:
                continue
            at = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone).timestamp()
            if at >= now:
                return at
        raise AssertionError("a run has at least one day")  # parse_runs sees to it


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
    """The catalog's triggers, indexed by the event types that schedule and cancel them,
    and its always-on runs (``by_id`` holds both: a run fires as a trigger of its id)."""

    all: tuple[Trigger, ...] = ()
    runs: tuple[Run, ...] = ()
    by_id: Mapping[str, Trigger] = field(init=False)
    run_by_id: Mapping[str, Run] = field(init=False)
    scheduled_by: Mapping[str, tuple[Trigger, ...]] = field(init=False)
    cancelled_by: Mapping[str, tuple[Trigger, ...]] = field(init=False)

    def __post_init__(self) -> None:
        every = (*self.all, *(r.trigger for r in self.runs))
        object.__setattr__(self, "by_id", {t.trigger_id: t for t in every})
        object.__setattr__(self, "run_by_id", {r.run_id: r for r in self.runs})
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
        return bool(self.all or self.runs)

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
    raw: Sequence[Mapping[str, Any]],
    feature_names: frozenset[str],
    offer_ids: frozenset[str],
    runs: Sequence[Mapping[str, Any]] = (),
) -> Triggers:
    """The catalog's ``[[trigger]]`` and ``[[outbound]]`` tables."""
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
        channels, offers = _channels_and_offers(table, where, offer_ids)
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
                condition=_rule(when, feature_names, f"{where}.when"),
                channels=channels,
                offers=offers,
                placement=str(table.get("placement", "")),
                delay_seconds=delay,
                cancel_on=frozenset(str(e) for e in table.get("cancel_on", ())),
                reeligible_seconds=again,
            )
        )
    parsed_runs = tuple(_run(table, i, feature_names, offer_ids) for i, table in enumerate(runs))
    ids = [t.trigger_id for t in out] + [r.run_id for r in parsed_runs]
    if len(set(ids)) != len(ids):
        raise ConfigurationError("catalog: duplicate trigger or outbound ids")
    return Triggers(tuple(out), parsed_runs)


def _run(
    table: Mapping[str, Any], i: int, feature_names: frozenset[str], offer_ids: frozenset[str]
) -> Run:
    rid = str(table.get("id", "")).strip()
    where = f"outbound {rid or i}"
    if not rid:
        raise ConfigurationError(f"{where}: no id")
    known(table, RUN_KEYS, where)
    channels, offers = _channels_and_offers(table, where, offer_ids)
    at = str(table.get("at", ""))
    match = re.fullmatch(r"([01]\d|2[0-3]):([0-5]\d)", at)
    if match is None:
        raise ConfigurationError(f"{where}.at: a local time of day as HH:MM, not {at!r}")
    days = [str(d).lower() for d in table.get("days", WEEKDAYS)]
    names(days, WEEKDAYS, f"{where}.days")
    if not days:
        raise ConfigurationError(f"{where}.days: at least one day")
    try:
        again = float(table.get("reeligible_hours", DEFAULT_RUN_REELIGIBLE_HOURS)) * 3600
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"{where}.reeligible_hours: {exc}") from exc
    if again < 0:
        raise ConfigurationError(f"{where}.reeligible_hours: >= 0")
    segment = table.get("segment")
    return Run(
        trigger=Trigger(
            trigger_id=rid,
            events=frozenset(),
            condition=None,
            channels=channels,
            offers=offers,
            placement=str(table.get("placement", "")),
            reeligible_seconds=again,
        ),
        segment=_rule(segment, feature_names, f"{where}.segment"),
        at_minute=int(match[1]) * 60 + int(match[2]),
        days=frozenset(WEEKDAYS.index(d) for d in days),
    )


def _channels_and_offers(
    table: Mapping[str, Any], where: str, offer_ids: frozenset[str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A trigger's or run's channels (at least one, each known) and offers (each in the
    catalog; none: all)."""
    channels = tuple(str(c) for c in table.get("channels", ()))
    names(channels, CHANNELS, f"{where}.channels")
    if not channels:
        raise ConfigurationError(f"{where}.channels: at least one channel")
    offers = tuple(str(o) for o in table.get("offers", ()))
    unknown = sorted(set(offers) - offer_ids)
    if unknown:
        raise ConfigurationError(f"{where}.offers: no offer {', '.join(unknown)}")
    return channels, offers


def _rule(source: Any, feature_names: frozenset[str], where: str) -> Expression | None:
    if not source:
        return None
    try:
        return compile_expression(str(source), feature_names)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{where}: {exc}") from exc
