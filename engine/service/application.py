"""The application service: the decision core plus the stores, with deadlines.

Async and transport-free: the gRPC servicer decodes requests into the dataclasses used
here and encodes what comes back. This is where "degrade, never fail" lives: a feature
store that is down or slower than ``feature_timeout`` yields a degraded decision, and a
short circuit breaker keeps later calls from waiting on it again. The breaker opens at
the first error, but only after ``TIMEOUTS_TO_OPEN`` timeouts in a row: under a burst of
CPU load a single read can miss its budget in our own event loop, and that must not
degrade every customer for the next second.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from common.errors import ArbiterError, FeatureStoreUnavailable, NotFound, ProfileSchemaMismatch
from engine.core.decision import Decision, DecisionCore, DecisionRequest, StageTimer, rule_env
from engine.service.decision_log import DecisionLogWriter
from feature_store.store import (
    CustomerHistory,
    CustomerRecord,
    DecisionLog,
    EventRecord,
    FeatureStore,
    OutcomeEffects,
    OutcomeRecord,
    Reservation,
)

COOLDOWN_OUTCOMES = frozenset({"decline", "dismiss"})
TIMEOUTS_TO_OPEN = 3
SUPPRESS_OUTCOMES = frozenset({"accept", "convert"})


class Store(FeatureStore, DecisionLog, Protocol):
    """The online store serves features and keeps the logs."""


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


def _unavailable(error: ArbiterError) -> str:
    if isinstance(error, ProfileSchemaMismatch):
        return str(error)
    return f"feature store unavailable: {error}"


def _reservation(
    core: DecisionCore, decision: Decision, channel: str, now: float
) -> Reservation | None:
    """The contacts a decision makes, with their caps; None when nothing is capped."""
    if not decision.actions:
        return None
    policy = core.catalog.contact_policy
    channel_caps = tuple((c.window_seconds, c.max) for c in policy.channel_caps.get(channel, ()))
    offer_policies = [core.catalog.by_id[a.offer_id].policy for a in decision.actions]
    offers = tuple(
        (a.offer_id, tuple((c.window_seconds, c.max) for c in p.caps), p.suppress_after_accept)
        for a, p in zip(decision.actions, offer_policies, strict=True)
    )
    if not channel_caps and not any(p.caps or p.suppress_after_accept for p in offer_policies):
        return None
    return Reservation(
        decision.customer_id,
        decision.decision_id,
        channel,
        channel in policy.outbound,
        now + policy.pending_seconds,
        channel_caps,
        offers,
    )


def _apply_reservation(
    decision: Decision, reservation: Reservation, result: list[str] | str
) -> Decision:
    """Keeps the actions the reservation recorded. ``result`` is the offer ids reserved,
    or why the reservation failed: then outbound decisions send nothing and inbound ones
    answer, flagged degraded."""
    if isinstance(result, str):
        if reservation.outbound:
            reason = f"contact policy unavailable, nothing sent: {result}"
            return replace(decision, actions=(), degraded=True, degraded_reason=reason)
        reason = f"contacts not reserved: {result}"
        if decision.degraded_reason:
            reason = f"{decision.degraded_reason}; {reason}"
        return replace(decision, degraded=True, degraded_reason=reason)
    reserved = set(result)
    if len(reserved) == len(decision.actions):
        return decision
    kept = [a for a in decision.actions if a.offer_id in reserved]
    lost = {
        a.offer_id: "cap taken by a concurrent decision"
        for a in decision.actions
        if a.offer_id not in reserved
    }
    return replace(
        decision,
        actions=tuple(replace(a, rank=i) for i, a in enumerate(kept, start=1)),
        excluded={**decision.excluded, **lost},
    )


class Arbiter:
    def __init__(
        self,
        core: DecisionCore,
        store: Store,
        writer: DecisionLogWriter,
        *,
        feature_timeout: float = 0.03,
        reserve_timeout: float = 0.05,
        breaker_seconds: float = 1.0,
    ) -> None:
        self.core = core  # replaced as a whole when a new model or catalog is promoted
        # (core, share): a challenger model served to a stable share of the customers
        self.challenger: tuple[DecisionCore, float] | None = None
        self.store = store
        self.writer = writer
        self.feature_timeout = feature_timeout
        self.reserve_timeout = reserve_timeout
        self.breaker_seconds = breaker_seconds
        self._store_down_until = 0.0
        self._store_down_reason = ""
        self._timeouts = 0  # reads in a row that missed their budget
        self.breaker_opened = 0  # times the breaker opened (diagnostics)

    async def _fetch(self, customer_id: str) -> tuple[CustomerRecord | None, str]:
        if time.monotonic() < self._store_down_until:
            return None, self._store_down_reason
        try:
            record = await asyncio.wait_for(self.store.fetch(customer_id), self.feature_timeout)
        except TimeoutError:
            self._timeouts += 1
            reason = f"feature store unavailable: slower than {self.feature_timeout * 1000:g} ms"
            if self._timeouts < TIMEOUTS_TO_OPEN:
                return None, reason
        except ProfileSchemaMismatch as exc:
            return None, _unavailable(exc)  # this profile only: the store itself is fine
        except FeatureStoreUnavailable as exc:
            reason = _unavailable(exc)
        else:
            self._timeouts = 0
            return record, ""
        self._timeouts = 0
        self.breaker_opened += 1
        self._store_down_until = time.monotonic() + self.breaker_seconds
        self._store_down_reason = reason
        return None, reason

    def core_for(self, customer_id: str) -> DecisionCore:
        """The challenger's core for its share of customers (stable by id), else the
        champion's."""
        challenger = self.challenger
        if challenger is not None and zlib.crc32(customer_id.encode()) < challenger[1] * 2**32:
            return challenger[0]
        return self.core

    async def decide(self, request: DecisionRequest, timer: StageTimer | None = None) -> Decision:
        core = self.core_for(request.customer_id)  # one consistent core for the whole call
        if timer:
            timer.start()
        record, degraded = await self._fetch(request.customer_id)
        if timer:
            timer.lap("fetch")
        now = time.time()
        decision = core.decide(request, record, now, degraded, timer)
        # Degraded answers reserve too: a slow read must not let caps be exceeded.
        reservation = _reservation(core, decision, request.channel, now)
        if reservation is not None:
            result: list[str] | str
            try:
                result = await asyncio.wait_for(
                    self.store.reserve(reservation), self.reserve_timeout
                )
            except TimeoutError:
                result = f"slower than {self.reserve_timeout * 1000:g} ms"
            except FeatureStoreUnavailable as exc:
                result = str(exc)
            decision = _apply_reservation(decision, reservation, result)
        if timer:
            timer.lap("reserve")
        self.writer.submit(decision, request, now)
        return decision

    async def decide_many(self, requests: Sequence[DecisionRequest]) -> list[Decision]:
        """Decisions for many customers (a campaign chunk): one pipelined read and one
        pipelined reservation for all of them, the same core and contact policy. No
        per-call read budget: a campaign waits for a slow store rather than degrade."""
        core = self.core
        now = time.time()
        try:
            records = await self.store.fetch_many([r.customer_id for r in requests], now)
        except FeatureStoreUnavailable as exc:
            records = [exc] * len(requests)
        decisions = [
            self.core_for(request.customer_id).decide(request, record, now)
            if isinstance(record, CustomerRecord)
            else core.decide(request, None, now, _unavailable(record))
            for request, record in zip(requests, records, strict=True)
        ]
        pending = [
            (i, reservation)
            for i, (request, decision) in enumerate(zip(requests, decisions, strict=True))
            if (reservation := _reservation(core, decision, request.channel, now)) is not None
        ]
        if pending:
            try:
                results: list[list[str] | ArbiterError] = await self.store.reserve_many(
                    [r for _, r in pending]
                )
            except FeatureStoreUnavailable as exc:
                results = [exc] * len(pending)
            for (i, reservation), result in zip(pending, results, strict=True):
                decisions[i] = _apply_reservation(
                    decisions[i],
                    reservation,
                    str(result) if isinstance(result, Exception) else result,
                )
        for request, decision in zip(requests, decisions, strict=True):
            self.writer.submit(decision, request, now)
        return decisions

    async def report_outcome(self, outcome: OutcomeRecord) -> tuple[bool, str]:
        offer = self.core.catalog.by_id.get(outcome.offer_id)
        if offer is None:
            raise NotFound(f"offer_id: no offer {outcome.offer_id!r} in the catalog")
        effects = OutcomeEffects(
            cooldown_until=(
                outcome.occurred_at + offer.policy.cooldown_seconds
                if outcome.outcome in COOLDOWN_OUTCOMES
                else 0.0
            ),
            suppress=outcome.outcome in SUPPRESS_OUTCOMES and offer.policy.suppress_after_accept,
            # Any response means the offer was seen: it counts once towards the caps.
            impression=True,
        )
        return await self.store.record_outcome(outcome, effects)

    async def record_event(self, event: EventRecord) -> None:
        await self.store.record_event(event)

    async def profile(self, customer_id: str) -> Profile:
        core = self.core
        record, history = await asyncio.gather(
            self.store.fetch(customer_id), self.store.history(customer_id)
        )
        schema = core.schema
        features = schema.customer_vector(record, time.time())
        env = rule_env(schema.names, features, record.attributes, DecisionRequest(customer_id, ""))
        stage, reason = core.stage_rules.derive(env)
        return Profile(
            customer_id=customer_id,
            known=record.known,
            stage=stage,
            stage_reason=reason,
            # float32 storage: show 94.2, not 94.19999694824219
            features={
                n: float(f"{v:.7g}") for n, v in zip(schema.names, features.tolist(), strict=True)
            },
            attributes=record.attributes,
            events=history.events,
            decisions=offer_history(history),
        )
