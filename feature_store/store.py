"""What the engine needs from an online store, as plain data and small protocols.

``RedisFeatureStore`` (feature_store.redis_store) is the real implementation. Every
method translates its backend's errors into ``FeatureStoreUnavailable``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True, slots=True)
class CustomerRecord:
    """Everything one decision reads about a customer, fetched in one round trip."""

    customer_id: str
    known: bool  # False: no stored profile (a new visitor); batch holds the defaults
    batch: np.ndarray  # float32, schema batch order
    attributes: Mapping[str, str]
    realtime: Mapping[str, str]  # the real-time hash, decoded


@dataclass(frozen=True, slots=True)
class EventRecord:
    customer_id: str
    channel: str  # lower-case channel name: web, mobile_app, call_center, email, sms
    event_type: str
    attributes: Mapping[str, str]
    occurred_at: float  # unix seconds


@dataclass(frozen=True, slots=True)
class LoggedDecision:
    """One decision as the log keeps it: the full entry and the customer's summary."""

    customer_id: str
    entry: Mapping[str, Any]  # JSON-able: features as served, candidates, scores, ...
    summary: Mapping[str, Any]  # JSON-able: what GetProfile shows under recent_decisions


@dataclass(frozen=True, slots=True)
class OutcomeRecord:
    customer_id: str
    decision_id: str
    offer_id: str
    outcome: str  # lower-case outcome name: impression, click, accept, ...
    value: float
    occurred_at: float  # unix seconds
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class CustomerHistory:
    """Newest first: the customer's recent events, decisions and outcomes."""

    events: Sequence[Mapping[str, Any]] = field(default_factory=tuple)
    decisions: Sequence[Mapping[str, Any]] = field(default_factory=tuple)
    outcomes: Sequence[Mapping[str, Any]] = field(default_factory=tuple)


class FeatureStore(Protocol):
    async def fetch(self, customer_id: str) -> CustomerRecord:
        """Profile, attributes and real-time state of one customer, in one round trip."""
        ...

    async def record_event(self, event: EventRecord) -> None:
        """Applies an event to the real-time state atomically; visible to the next fetch."""
        ...

    async def history(self, customer_id: str) -> CustomerHistory: ...


class DecisionLog(Protocol):
    async def append_decisions(self, decisions: Sequence[LoggedDecision]) -> None:
        """Appends decisions to the log, in order, in one round trip."""
        ...

    async def record_outcome(self, outcome: OutcomeRecord) -> tuple[bool, str]:
        """Records an outcome once per idempotency key: (newly recorded, outcome log id)."""
        ...
