"""An in-memory FeatureStore and DecisionLog with the same contract as the Redis one.
(Over 300 lines: one class for the nine calls of both protocols, as redis_store.py.)

The reference implementation: tests of the core and the service run on it without a
Redis, and a new backend has a readable model of what each call must do.
tests/feature_store/test_store_contract.py runs one suite against both. Everything lives
in one process (no sharing across replicas) and nothing expires except sessions; each
call runs without an await inside, so on one event loop it is atomic as a Lua script is.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from common.errors import ArbiterError, ProfileSchemaMismatch, RateLimited
from engine.core import contact_reservation
from engine.core.customer import (
    CHANNEL_COUNT,
    EVENT_COUNT,
    LAST_SEEN,
    LIFETIME_COUNT,
    OUTCOME_COUNT,
    STAMP,
    Consent,
    Contact,
    CustomerRecord,
    OutcomeEffects,
    Reservation,
    category_counter,
)
from engine.core.schema import FeatureSchema
from feature_store import keys
from feature_store.store import (
    DECISIONS_KEPT,
    EVENTS_PER_SECOND,
    OUTCOMES_KEPT,
    CustomerHistory,
    EventRecord,
    Forgotten,
    LoggedDecision,
    OutcomeRecord,
    consent_changes,
    encoded,
    stored_attributes,
)


def _copy(value: Any) -> Any:
    """What a JSON round trip through Redis would give back."""
    return orjson.loads(orjson.dumps(value))


@dataclass(frozen=True)
class _Profile:
    vector: bytes  # the schema's packed batch vector (engine/core/schema.py)
    fingerprint: str  # of the schema it was written with
    attributes: Mapping[str, str]
    loaded_at: float  # unix seconds


@dataclass
class _Customer:
    profile: _Profile | None = None
    realtime: dict[str, str] = field(default_factory=dict)
    # counter name -> (bucket seconds, slot) -> (bucket number, count)
    windows: dict[str, dict[tuple[int, int], tuple[int, float]]] = field(default_factory=dict)
    session: dict[str, str] = field(default_factory=dict)
    session_until: float = 0.0  # monotonic
    contacts: dict[str, float] = field(default_factory=dict)  # member -> when
    pending: dict[str, float] = field(default_factory=dict)  # member -> lapses at
    reshown: dict[str, str] = field(default_factory=dict)  # "<decision>|<offer>" -> holder
    cooldowns: dict[str, float] = field(default_factory=dict)  # offer -> until
    held: dict[str, float] = field(default_factory=dict)  # offer -> since
    last_category: str = ""
    events: list[Any] = field(default_factory=list)  # newest first
    decisions: list[Any] = field(default_factory=list)
    outcomes: list[Any] = field(default_factory=list)
    idempotency: dict[str, str] = field(default_factory=dict)
    event_keys: dict[str, float] = field(default_factory=dict)  # key -> until (monotonic)
    event_rate: tuple[int, int] = (0, 0)  # (unix second, events in it)
    consent: dict[str, Consent] = field(default_factory=dict)


def _member(decision_id: str, offer_id: str, channel: str) -> str:
    return f"{decision_id}|{offer_id}|{channel}"


def _contact(member: str, at: float) -> Contact:
    decision_id, offer_id, channel = member.split("|", 2)
    return Contact(decision_id, offer_id, channel, at)


class MemoryStore:
    """FeatureStore and DecisionLog in this process's memory."""

    def __init__(
        self,
        schema: FeatureSchema,
        *,
        contact_horizon_seconds: int = 30 * 86400,
        session_seconds: int = 1800,
        events_per_second: int = EVENTS_PER_SECOND,
    ) -> None:
        self._events_per_second = events_per_second
        self._schema = schema
        self._horizon = contact_horizon_seconds
        self._session_seconds = session_seconds
        self._customers: dict[str, _Customer] = {}
        self._decision_log: list[Any] = []
        self._logged_ids: set[str] = set()
        self._outcome_log: list[Any] = []
        self._volume: dict[str, tuple[int, float]] = {}  # counter -> (contacts, kept until)

    def _customer(self, customer_id: str) -> _Customer:
        return self._customers.setdefault(customer_id, _Customer())

    @property
    def cancel_safe(self) -> bool:
        """Every call runs to its end without an await: a cancellation cannot cut one."""
        return True

    def shard_of(self, customer_id: str) -> str:
        return ""  # one process, one part

    def shards(self) -> set[str]:
        return set()

    async def prepare(self) -> None:
        """Nothing to get ready."""

    async def aclose(self) -> None:
        """Nothing to release."""

    def put_profile(self, customer_id: str, fields: Mapping[bytes, bytes]) -> None:
        """Stores a profile the loader made (``loader.profile_fields``), whole; read once
        here, as the Redis store reads its hash (attributes of any shape read as strings,
        or none)."""
        self._customer(customer_id).profile = _Profile(
            vector=fields[keys.FIELD_VECTOR],
            fingerprint=fields[keys.FIELD_SCHEMA].decode(),
            attributes=stored_attributes(fields.get(keys.FIELD_ATTRIBUTES)),
            loaded_at=float(fields.get(keys.FIELD_UPDATED, b"0")),
        )

    # -- FeatureStore -------------------------------------------------------------------

    async def fetch(self, customer_id: str, now: float | None = None) -> CustomerRecord:
        return self._fetch(customer_id, time.time() if now is None else now)

    def _fetch(self, customer_id: str, now: float) -> CustomerRecord:
        c = self._customers.get(customer_id) or _Customer()
        schema = self._schema
        session = c.session if time.monotonic() < c.session_until else {}
        extra: dict[str, Any] = {
            "windows": self._window_counts(c, now),
            "session": dict(session),
            "contacts": tuple(
                _contact(m, at) for m, at in c.contacts.items() if at >= now - self._horizon
            ),
            "pending": tuple(_contact(m, until) for m, until in c.pending.items() if until >= now),
            "cooldowns": dict(c.cooldowns),
            "held": dict(c.held),
            "last_category": c.last_category,
            "consent": dict(c.consent),
            "loaded_at": c.profile.loaded_at if c.profile else 0.0,
        }
        if c.profile is None:
            return CustomerRecord(
                customer_id, False, schema.decode_batch(None), {}, dict(c.realtime), **extra
            )
        fingerprint = c.profile.fingerprint
        if fingerprint != schema.fingerprint:
            raise ProfileSchemaMismatch(
                f"profile of {customer_id} was written with schema {fingerprint}, "
                f"serving schema is {schema.fingerprint}: reload profiles"
            )
        attributes = dict(c.profile.attributes)
        vector = schema.decode_batch(c.profile.vector)
        return CustomerRecord(customer_id, True, vector, attributes, dict(c.realtime), **extra)

    @staticmethod
    def _window_counts(c: _Customer, now: float) -> dict[str, tuple[float, ...]]:
        out = {}
        for name, slots in c.windows.items():
            sums = []
            for _, seconds, size in keys.SLIDING_WINDOWS:
                oldest = math.floor(now / seconds) - size
                sums.append(
                    sum(n for (s, _), (b, n) in slots.items() if s == seconds and b > oldest)
                )
            out[name] = tuple(float(s) for s in sums)
        return out

    @staticmethod
    def _bump(c: _Customer, name: str, ts: float) -> None:
        slots = c.windows.setdefault(name, {})
        for _, seconds, size in keys.SLIDING_WINDOWS:
            bucket = math.floor(ts / seconds)
            slot = (seconds, bucket % size)
            current, count = slots.get(slot, (-1, 0.0))
            if current == bucket:
                slots[slot] = (bucket, count + 1)
            elif bucket > current:
                slots[slot] = (bucket, 1.0)
            # else: older than the slot's bucket, outside every window it feeds

    async def fetch_many(
        self, customer_ids: Sequence[str], now: float
    ) -> list[CustomerRecord | ArbiterError]:
        out: list[CustomerRecord | ArbiterError] = []
        for customer_id in customer_ids:
            try:
                out.append(self._fetch(customer_id, now))
            except ProfileSchemaMismatch as exc:
                out.append(exc)
        return out

    def _admitted(self, c: _Customer, event: EventRecord) -> bool:
        """As the EVENT script admits: False for an idempotency key seen already, an error
        past the customer's event rate, else counted against the rate (and the key kept)."""
        key = event.idempotency_key
        if key and c.event_keys.get(key, 0.0) > time.monotonic():
            return False
        second = int(time.time())
        used = c.event_rate[1] if c.event_rate[0] == second else 0
        if used >= self._events_per_second:
            raise RateLimited(
                f"customer_id: over {self._events_per_second} events a second; retry later"
            )
        c.event_rate = (second, used + 1)
        if key:
            c.event_keys[key] = time.monotonic() + keys.EVENT_IDEMPOTENCY_TTL_SECONDS
        return True

    async def record_event(self, event: EventRecord) -> bool:
        c = self._customer(event.customer_id)
        if not self._admitted(c, event):
            return False  # recorded already under this key
        ts = event.occurred_at
        etype = self._schema.counted_event_type(event.event_type)
        category = self._schema.counted_category(event.attributes.get("category", ""))
        rt = c.realtime
        for name in (f"{LIFETIME_COUNT}{etype}", f"{CHANNEL_COUNT}{event.channel}"):
            rt[name] = str(int(rt.get(name, "0")) + 1)
        for stamp in (LAST_SEEN, f"{STAMP}{etype}"):
            if ts > float(rt.get(stamp, "0")):
                rt[stamp] = repr(ts)
        if category:
            c.last_category = category
        c.events = [_copy(event.as_json()), *c.events][: self._schema.recent_events]
        counters = [f"{EVENT_COUNT}{etype}", f"{CHANNEL_COUNT}{event.channel}"]
        if category:
            counters.append(category_counter(category))
            if self._schema.counts_type_category_pairs:
                counters.append(f"{EVENT_COUNT}{etype}:{category}")
        for name in counters:
            self._bump(c, name, ts)
        if time.monotonic() >= c.session_until:
            c.session = {}
        session = c.session
        for name in [f"{EVENT_COUNT}{etype}"] + ([category_counter(category)] if category else []):
            session[name] = str(int(session.get(name, "0")) + 1)
        session.setdefault(keys.SESSION_STARTED, repr(ts))
        c.session_until = time.monotonic() + self._session_seconds
        self._consent(c, event)
        return True

    @staticmethod
    def _consent(c: _Customer, event: EventRecord) -> None:
        """A newer consent event replaces an older one for its channel, not the reverse."""
        for channel, consent in consent_changes(event).items():
            if channel not in c.consent or consent.at >= c.consent[channel].at:
                c.consent[channel] = consent

    async def reserve(self, reservation: Reservation) -> list[str]:
        return self._reserve(reservation, time.time())

    def _reserve(self, r: Reservation, now: float) -> list[str]:
        """The volume limits' ``claim``, then ``contact_reservation.admit`` on this
        customer's state, recorded, and the volume a refused contact took given back."""
        if not (r.channel_volume or r.offer_volume):
            return self._admit(r, now)
        kept = dict(self._limits(r))  # counter -> seconds it is kept
        claimed = contact_reservation.claim(r, self._volume_used(list(kept), now))
        if claimed.channel_full:
            return []
        for name in claimed.taken:
            self._add_volume(name, 1, now + kept[name], now)
        reserved = self._admit(contact_reservation.without(r, claimed.refused), now)
        for name in contact_reservation.given_back(r, claimed, reserved):
            self._add_volume(name, -1, now + kept[name], now)
        return reserved

    @staticmethod
    def _limits(r: Reservation) -> list[tuple[str, int]]:
        """Every volume counter of ``r``, and how long it is kept."""
        counters = [*r.channel_volume, *(c for _, cs in r.offer_volume for c in cs)]
        return [(name, keep) for name, _, keep in counters]

    def _volume_used(self, names: Sequence[str], now: float) -> dict[str, int]:
        out = {}
        for name in names:
            used, until = self._volume.get(name, (0, 0.0))
            out[name] = used if until > now else 0
        return out

    def _add_volume(self, name: str, n: int, until: float, now: float) -> None:
        used = self._volume_used([name], now)[name]
        self._volume[name] = (max(used + n, 0), until)

    async def volume_usage(self, counters: Sequence[str]) -> list[int]:
        used = self._volume_used(counters, time.time())
        return [used[name] for name in counters]

    def _admit(self, r: Reservation, now: float) -> list[str]:
        """``contact_reservation.admit`` on this customer's state, then recorded."""
        c = self._customer(r.customer_id)
        c.contacts = {m: at for m, at in c.contacts.items() if at >= now - self._horizon}
        c.pending = {m: until for m, until in c.pending.items() if until >= now}
        contacts = tuple(_contact(m, at) for m, at in c.contacts.items())
        pending = tuple(_contact(m, until) for m, until in c.pending.items())
        reserved = []
        for a in contact_reservation.admit(r, contacts, pending, c.cooldowns, c.held, now):
            if a.again is not None:
                holder = a.again.decision_id
                member = _member(holder, a.offer_id, a.again.channel)
                c.pending[member] = max(c.pending[member], r.pending_until)
                if holder != r.decision_id:
                    if len(c.reshown) >= keys.RESHOWN_KEPT:
                        c.reshown.clear()
                    c.reshown[f"{r.decision_id}|{a.offer_id}"] = holder
            elif r.outbound:
                c.contacts[_member(r.decision_id, a.offer_id, r.channel)] = now
            else:
                c.pending[_member(r.decision_id, a.offer_id, r.channel)] = r.pending_until
            reserved.append(a.offer_id)
        return reserved

    async def reserve_many(
        self, reservations: Sequence[Reservation]
    ) -> list[list[str] | ArbiterError]:
        now = time.time()
        return [self._reserve(r, now) for r in reservations]

    async def history(self, customer_id: str) -> CustomerHistory:
        c = self._customers.get(customer_id) or _Customer()
        return CustomerHistory(
            events=list(c.events), decisions=list(c.decisions), outcomes=list(c.outcomes)
        )

    # -- DecisionLog --------------------------------------------------------------------

    async def append_decisions(self, decisions: Sequence[LoggedDecision]) -> None:
        for d in decisions:
            if d.id in self._logged_ids:  # each decision once, as in Redis
                continue
            self._logged_ids.add(d.id)
            self._decision_log.append(orjson.loads(encoded(d.entry)))
            c = self._customer(d.customer_id)
            c.decisions = [orjson.loads(encoded(d.summary)), *c.decisions][:DECISIONS_KEPT]

    async def record_outcome(
        self, outcome: OutcomeRecord, effects: OutcomeEffects
    ) -> tuple[bool, str]:
        c = self._customer(outcome.customer_id)
        known = c.idempotency.get(outcome.idempotency_key)
        if known is not None:
            return False, known
        c.outcomes = [_copy(outcome.summary()), *c.outcomes][:OUTCOMES_KEPT]
        name = f"{OUTCOME_COUNT}{outcome.outcome}"
        c.realtime[name] = str(int(c.realtime.get(name, "0")) + 1)
        self._bump(c, name, outcome.occurred_at)
        offer = outcome.offer_id
        if effects.cooldown_until > c.cooldowns.get(offer, 0.0):
            c.cooldowns[offer] = effects.cooldown_until
        if effects.suppress:
            c.held.setdefault(offer, outcome.occurred_at)
        if effects.impression:
            holder = c.reshown.get(f"{outcome.decision_id}|{offer}", outcome.decision_id)
            prefix = f"{holder}|{offer}|"
            if not any(m.startswith(prefix) for m in c.contacts):
                reserved = [m for m in c.pending if m.startswith(prefix)]
                for m in reserved:
                    del c.pending[m]
                c.contacts[reserved[-1] if reserved else prefix] = outcome.occurred_at
        self._outcome_log.append(_copy(outcome.log_entry()))
        log_id = f"{len(self._outcome_log)}-0"
        c.idempotency[outcome.idempotency_key] = log_id
        return True, log_id

    async def forget(self, customer_id: str) -> Forgotten:
        c = self._customers.pop(customer_id, None)
        removed: list[str] = []
        if c is not None:
            present = {
                keys.PROFILE: c.profile is not None,
                keys.REALTIME: bool(c.realtime or c.last_category),
                keys.WINDOWS: bool(c.windows),
                keys.SESSION: bool(c.session),
                keys.CONTACTS: bool(c.contacts),
                keys.PENDING: bool(c.pending),
                keys.RESHOWN: bool(c.reshown),
                keys.POLICY: bool(c.cooldowns or c.held),
                keys.CONSENT: bool(c.consent),
                keys.EVENTS: bool(c.events),
                keys.DECISIONS: bool(c.decisions),
                keys.OUTCOMES: bool(c.outcomes),
                keys.EVENT_RATE: c.event_rate != (0, 0),
            }
            removed = [kind for kind in keys.FORGETTABLE if present[kind]]
        decisions = [d for d in self._decision_log if d.get("customer_id") != customer_id]
        outcomes = [o for o in self._outcome_log if o.get("customer_id") != customer_id]
        forgotten = Forgotten(
            removed=tuple(removed),
            idempotency_keys=len(c.idempotency) + len(c.event_keys) if c else 0,
            decision_log_entries=len(self._decision_log) - len(decisions),
            outcome_log_entries=len(self._outcome_log) - len(outcomes),
        )
        self._decision_log, self._outcome_log = decisions, outcomes
        return forgotten

    async def read_decisions(self) -> list[Any]:
        return list(self._decision_log)

    async def read_outcomes(self) -> list[Any]:
        return list(self._outcome_log)
