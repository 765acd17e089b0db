"""What the engine needs from an online store, as plain data and small protocols; the
customer state a fetch returns is the core's (engine/core/customer.py).

``RedisFeatureStore`` (feature_store/redis_store.py) is the real implementation and
``MemoryStore`` (feature_store/memory_store.py) the in-process reference; both pass
tests/feature_store/test_store_contract.py. Every method translates its backend's errors
into ``FeatureStoreUnavailable``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from common.errors import ArbiterError
from engine.core.customer import (
    CONSENT_CHANNELS,
    CONSENT_EVENTS,
    Consent,
    CustomerRecord,
    OutcomeEffects,
    Reservation,
)

# How much history each customer keeps for the single customer view (newest first).
DECISIONS_KEPT = 50
OUTCOMES_KEPT = 100
MAX_EVENT_ATTRIBUTE_BYTES = 1024  # of one kept event's attributes
EVENTS_PER_SECOND = 20  # a customer's events a second; past it RecordEvent is refused


def stored_attributes(blob: bytes | None) -> dict[str, str]:
    """A profile's attributes from their stored JSON, as strings whatever was stored: a
    value written by an older loader or by hand must not break the reads (a corrupt blob
    reads as no attributes)."""
    if not blob:
        return {}
    try:
        value = orjson.loads(blob)
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(value, dict):
        return {}
    return {str(k): v if isinstance(v, str) else orjson.dumps(v).decode() for k, v in value.items()}


def encode_consent(consent: Consent) -> str:
    """As the consent hash keeps it: ``<1|0>|<unix s>|<via channel>``."""
    return f"{int(consent.given)}|{consent.at!r}|{consent.via}"


def decode_consent(text: str) -> Consent | None:
    """``encode_consent``'s text back, or None when it is not one."""
    try:
        given, at, via = text.split("|", 2)
        return Consent(given == "1", float(at), via)
    except ValueError:
        return None


def consent_changes(event: EventRecord) -> dict[str, Consent]:
    """What an ``opt_in`` / ``opt_out`` event sets (channel -> consent); {} for others."""
    if event.event_type not in CONSENT_EVENTS:
        return {}
    target = event.attributes.get("channel", "")
    channels = CONSENT_CHANNELS if target == "all" else (target,)
    given = event.event_type == "opt_in"
    return {
        c: Consent(given, event.occurred_at, event.channel)
        for c in channels
        if c in CONSENT_CHANNELS
    }


@dataclass(frozen=True, slots=True)
class EventRecord:
    customer_id: str
    channel: str  # lower-case channel name: web, mobile_app, call_center, email, sms
    event_type: str
    attributes: Mapping[str, str]
    occurred_at: float  # unix seconds
    # The caller's key for this event, when it sent one: the same key again within
    # EVENT_IDEMPOTENCY_TTL_SECONDS is the same event, recorded once (a retry after a
    # timeout, or two replicas of one upstream message).
    idempotency_key: str = ""

    def as_json(self) -> dict[str, Any]:
        """The event as the customer's recent-events list keeps it: attributes up to
        ``MAX_EVENT_ATTRIBUTE_BYTES`` (then ``truncated``), so the list stays bounded."""
        kept: dict[str, str] = {}
        size = 0
        for name, value in self.attributes.items():
            size += len(name) + len(value)
            if size > MAX_EVENT_ATTRIBUTE_BYTES:
                break
            kept[name] = value
        record: dict[str, Any] = {
            "channel": self.channel,
            "event_type": self.event_type,
            "attributes": kept,
            "occurred_at": self.occurred_at,
        }
        if len(kept) < len(self.attributes):
            record["truncated"] = True
        return record


@dataclass(frozen=True, slots=True)
class LoggedDecision:
    """One decision as the log keeps it: the full entry and the customer's summary."""

    customer_id: str
    # JSON-able, or its JSON already (the log process gets entries as bytes)
    entry: Mapping[str, Any] | bytes  # features as served, candidates, scores, ...
    summary: Mapping[str, Any] | bytes  # what GetProfile shows under recent_decisions
    decision_id: str = ""  # the entry's, when the entry is bytes (read from it otherwise)

    @property
    def id(self) -> str:
        """The decision's id: each is logged once under it."""
        if self.decision_id:
            return self.decision_id
        entry = self.entry if not isinstance(self.entry, bytes) else orjson.loads(self.entry)
        return str(entry["decision_id"])


def encoded(value: Mapping[str, Any] | bytes) -> bytes:
    """A log entry's or summary's JSON (orjson: a 100-candidate entry in ~7 us)."""
    return value if isinstance(value, bytes) else orjson.dumps(value)


@dataclass(frozen=True, slots=True)
class OutcomeRecord:
    customer_id: str
    decision_id: str
    offer_id: str
    outcome: str  # lower-case outcome name: impression, click, accept, ...
    value: float
    occurred_at: float  # unix seconds
    idempotency_key: str
    reported_by: str = ""  # e.g. the desk's signed-in agent

    def summary(self) -> dict[str, Any]:
        """The outcome as the customer's recent-outcomes list keeps it."""
        summary: dict[str, Any] = {
            "decision_id": self.decision_id,
            "offer_id": self.offer_id,
            "outcome": self.outcome,
            "value": self.value,
            "occurred_at": self.occurred_at,
        }
        if self.reported_by:
            summary["reported_by"] = self.reported_by
        return summary

    def log_entry(self) -> dict[str, Any]:
        """The outcome as the outcome log keeps it (what training reads)."""
        return {
            **self.summary(),
            "customer_id": self.customer_id,
            "idempotency_key": self.idempotency_key,
        }


@dataclass(frozen=True, slots=True)
class CustomerHistory:
    """Newest first: the customer's recent events, decisions and outcomes."""

    events: Sequence[Mapping[str, Any]] = field(default_factory=tuple)
    decisions: Sequence[Mapping[str, Any]] = field(default_factory=tuple)
    outcomes: Sequence[Mapping[str, Any]] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class Forgotten:
    """What forgetting a customer removed."""

    removed: tuple[str, ...] = ()  # kinds of per-customer state, in keys.FORGETTABLE order
    idempotency_keys: int = 0
    decision_log_entries: int = 0
    outcome_log_entries: int = 0


class FeatureStore(Protocol):
    @property
    def cancel_safe(self) -> bool:
        """Whether a call on the decision path (fetch, reserve) may be cancelled by the
        caller's own ``asyncio.timeout`` at any await (else it runs in a task of its own
        under ``wait_for``)."""
        ...

    def shard_of(self, customer_id: str) -> str:
        """The part of the store (a cluster primary) holding the customer's state, so that
        one part's failure is not taken for the whole store's; "" when it is all one."""
        ...

    def shards(self) -> set[str]:
        """Every part ``shard_of`` names, as last learned; empty when not known."""
        ...

    async def prepare(self) -> None:
        """Gets ready for the first call (connections, scripts); raises
        FeatureStoreUnavailable when the store cannot be reached (calls then retry it)."""
        ...

    async def fetch(self, customer_id: str, now: float | None = None) -> CustomerRecord:
        """Profile, attributes and real-time state of one customer, in one round trip;
        windows and contacts as of ``now`` (unix seconds; default: the clock)."""
        ...

    async def record_event(self, event: EventRecord) -> bool:
        """Applies an event to the real-time state atomically; visible to the next fetch.
        False when its idempotency key was seen already (nothing changed)."""
        ...

    async def history(self, customer_id: str) -> CustomerHistory: ...

    async def reserve(self, reservation: Reservation) -> list[str]:
        """Atomically re-checks every cap and records the contacts that fit; returns
        their offer ids in the order given. Volume limits over the whole base are claimed
        first (``contact_reservation.claim``), atomically across every replica, and what
        a refused contact took is given back: a limit is never exceeded."""
        ...

    async def volume_usage(self, counters: Sequence[str]) -> list[int]:
        """The contacts counted so far on each volume counter (0: none yet)."""
        ...

    async def fetch_many(
        self, customer_ids: Sequence[str], now: float
    ) -> list[CustomerRecord | ArbiterError]:
        """``fetch`` for many customers in one round trip; errors in place of records."""
        ...

    async def reserve_many(
        self, reservations: Sequence[Reservation]
    ) -> list[list[str] | ArbiterError]:
        """``reserve`` for many decisions in one round trip; errors in place of results."""
        ...


class DecisionLog(Protocol):
    async def append_decisions(self, decisions: Sequence[LoggedDecision]) -> None:
        """Appends decisions to the log, in order, in one round trip."""
        ...

    async def record_outcome(
        self, outcome: OutcomeRecord, effects: OutcomeEffects
    ) -> tuple[bool, str]:
        """Records an outcome once per idempotency key: (newly recorded, outcome log id)."""
        ...

    async def read_decisions(self) -> list[Any]:
        """Every logged decision entry, oldest first."""
        ...

    async def forget(self, customer_id: str) -> Forgotten:
        """Removes the customer's state and log entries; idempotent."""
        ...

    async def read_outcomes(self) -> list[Any]:
        """Every logged outcome entry, oldest first."""
        ...
