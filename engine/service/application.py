"""The application service: the decision core plus the stores, with deadlines.

Async and transport-free: the gRPC servicers decode requests into the dataclasses used
here and encode what comes back. This is where "degrade, never fail" lives: the store
guard (guard.py) turns a feature store that is down or slower than its budget into a
degraded decision, and the core's time is kept within what the caller's deadline leaves.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from common.errors import (
    ArbiterError,
    FeatureStoreUnavailable,
    InvalidArgument,
    NotFound,
)
from engine.core import adaptive, contact_reservation, contact_views, experiments
from engine.core.customer import CustomerRecord, Reservation
from engine.core.decision import Decision, DecisionCore, DecisionRequest, rule_env
from engine.core.decision_id import DecisionIds
from engine.core.timing import NO_TIMER, StageTimer
from engine.core.triggers import Pending
from engine.service import metrics
from engine.service.decision_log import LogWriter
from engine.service.guard import ANSWER_MARGIN, Store, StoreGuard, unavailable
from engine.service.profile import Profile, consent_views, offer_history, stage_transitions
from engine.service.triggers import react
from feature_store.store import EventRecord, Forgotten, OutcomeRecord
from feature_store.triggers import TriggerQueue

# Shares of what is left of a caller's deadline after the read: the model needs this
# much (else ranking by value answers in time), feature contributions this much.
MODEL_MIN_SECONDS = 0.003
EXPLAIN_MIN_SECONDS = 0.010
SHORT_FOR_MODEL = "ranked by value only: the caller's deadline leaves no time for the model"
TOO_SLOW = "ranked by value only: the model was too slow for the caller's deadline"
# A decision core slower than this on average (a big model or catalog) runs off the
# event loop, so that calls past their own scoring are not held up behind it.
SLOW_CORE_SECONDS = 0.002


def _timed(run: Callable[[], Decision]) -> tuple[Decision, float]:
    started = time.perf_counter()
    decision = run()
    return decision, time.perf_counter() - started


def _apply_reservation(
    decision: Decision, reservation: Reservation, result: Sequence[str] | str
) -> Decision:
    """``contact_reservation.apply_reservation``, counting the holds taken and the offers a
    concurrent decision took first."""
    kept = contact_reservation.apply_reservation(decision, reservation, result)
    if not isinstance(result, str):
        metrics.CAP_REJECTIONS.inc(len(decision.actions) - len(kept.actions))
        if not reservation.outbound:
            metrics.HOLDS.inc(len(result))
    return kept


# A client's clock may run this far behind the server's: its outcome still counts.
CLOCK_SKEW_SECONDS = 1.0


class Application:
    """What the API offers, over one store: decide (one or many), report outcomes,
    record events, show a profile. ``core`` (and ``challenger``) are replaced as a whole
    when a new model or catalog is promoted (reloader.py)."""

    def __init__(
        self,
        core: DecisionCore,
        store: Store,
        writer: LogWriter,
        *,
        ids: DecisionIds,
        feature_timeout: float = 0.03,
        reserve_timeout: float = 0.05,
        breaker_seconds: float = 0.5,
    ) -> None:
        self.core = core
        self.layer = adaptive.EMPTY  # the online layer served (layer_watch.py)
        self.ids = ids
        # (core, share): a challenger model served to a stable share of the customers
        self.challenger: tuple[DecisionCore, float] | None = None
        self.store = store
        # the decision path's reads and reservations: budgets and breakers
        self.guard = StoreGuard(
            store,
            feature_timeout=feature_timeout,
            reserve_timeout=reserve_timeout,
            breaker_seconds=breaker_seconds,
        )
        self.writer = writer
        self.core_seconds = 0.0  # moving average of a decision core's time
        # the volume limits' counters as last read (volume_watch.py); None: no limits
        self.volume: dict[str, int] | None = None
        # event triggers: where they wait (None: a store without Redis, no triggers), and
        # who is told of one due at once (trigger_scheduler.py's wake)
        self.triggers: TriggerQueue | None = None
        self.scheduled: Callable[[str, float], None] | None = None

    def core_for(self, customer_id: str) -> DecisionCore:
        """The challenger's core for its share of customers (stable by id within the
        challenge, salted by the challenger's version), else the champion's."""
        challenger = self.challenger
        if challenger is not None and experiments.in_treatment(
            experiments.challenge_name(challenger[0].scorer.version), customer_id, challenger[1]
        ):
            return challenger[0]
        return self.core

    async def decide(
        self,
        request: DecisionRequest,
        timer: StageTimer = NO_TIMER,
        deadline: float | None = None,
        now: float | None = None,
    ) -> Decision:
        """One decision. ``deadline`` (``time.monotonic()`` seconds) is when the caller
        stops waiting: the store calls are cut short to leave time to answer, so a caller
        with a tight deadline gets a degraded answer rather than none. ``now``: the time
        the contact policy judges by (unix seconds; the clock's by default)."""
        core = self.core_for(request.customer_id)  # one consistent core for the whole call
        timer.start()
        record, degraded = await self.guard.fetch(request.customer_id, deadline)
        timer.lap("fetch")
        now = time.time() if now is None else now
        for attempt in range(2):
            decision = await self._decide(core, request, record, now, degraded, timer, deadline)
            decision = self._signed(decision, now)
            # Degraded answers reserve too: a slow read must not let caps be exceeded.
            catalog = core.catalog
            reservation = contact_reservation.reservation(
                catalog.contact_policy, catalog.by_id, decision, request.channel, now
            )
            if reservation is None:
                break
            result = await self.guard.reserve(reservation, deadline)
            if attempt == 0 and self._volume_reached(reservation, result) and not result:
                # Nothing was recorded: decided again without what just reached its
                # limit, the next best. (With some actions recorded, they stand.)
                continue
            decision = _apply_reservation(decision, reservation, result)
            break
        timer.lap("reserve")
        self._done(decision, request, now)
        return decision

    def _volume_reached(self, reservation: Reservation, result: Sequence[str] | str) -> bool:
        """Whether the reservation lost an offer with a volume limit (or every offer, on a
        channel with one): its counters are then taken as full until the next read (the
        store does not say which rule refused: a lost cap race counts too, for at most a
        read's interval), and a decision that recorded nothing is decided again."""
        volume = self.volume
        if volume is None or isinstance(result, str):
            return False
        reserved = set(result)
        full = [
            (name, most)
            for offer_id, counters in reservation.offer_volume
            if offer_id not in reserved
            for name, most, _ in counters
        ]
        if reservation.channel_volume and not reserved:
            full += [(name, most) for name, most, _ in reservation.channel_volume]
        for name, most in full:
            volume[name] = max(volume.get(name, 0), most)
        return bool(full)

    async def _decide(
        self,
        core: DecisionCore,
        request: DecisionRequest,
        record: CustomerRecord | None,
        now: float,
        degraded: str,
        timer: StageTimer,
        deadline: float | None,
    ) -> Decision:
        """The core's decision within what is left of the caller's deadline: by value only
        when too little is left for the model, without feature contributions when too
        little is left for them, and off the event loop when the core is slow, falling
        back to value only if it does not finish in time."""
        left = None if deadline is None else deadline - time.monotonic()
        value_only = SHORT_FOR_MODEL if left is not None and left < MODEL_MIN_SECONDS else ""
        skipped = ""
        if request.explain and left is not None and left < EXPLAIN_MIN_SECONDS:
            skipped = f"{max(left, 0) * 1000:.0f} ms left of the caller's deadline"
        run = functools.partial(
            core.decide,
            request,
            record,
            now,
            degraded,
            value_only=value_only,
            explain_skipped=skipped,
            volume=self.volume,
        )
        if value_only or self.core_seconds < SLOW_CORE_SECONDS:
            started = time.perf_counter()
            decision = run(timer=timer)
            if not value_only:
                self._observe(time.perf_counter() - started)
            return decision
        budget = None if deadline is None else deadline - time.monotonic() - ANSWER_MARGIN
        try:
            decision, seconds = await asyncio.wait_for(asyncio.to_thread(_timed, run), budget)
        except TimeoutError:
            return core.decide(
                request,
                record,
                now,
                degraded,
                value_only=TOO_SLOW,
                explain_skipped=skipped,
                volume=self.volume,
            )
        self._observe(seconds)
        return decision

    def _observe(self, seconds: float) -> None:
        self.core_seconds = 0.8 * self.core_seconds + 0.2 * seconds

    async def decide_many(self, requests: Sequence[DecisionRequest]) -> list[Decision]:
        """Decisions for many customers (a campaign chunk): one pipelined read and one
        pipelined reservation for all of them, the same core and contact policy. No
        per-call read budget: a campaign waits for a slow store rather than degrade. A
        decision that recorded nothing because a volume limit was reached since the last
        read of the counters is decided again, once, without it (the next best)."""
        core = self.core
        now = time.time()
        try:
            records = await self.store.fetch_many([r.customer_id for r in requests], now)
        except FeatureStoreUnavailable as exc:
            records = [exc] * len(requests)
        decisions: list[Decision] = [None] * len(requests)  # type: ignore[list-item]
        todo = list(range(len(requests)))
        for attempt in range(2):
            for i in todo:
                request, record = requests[i], records[i]
                decisions[i] = self._signed(
                    self.core_for(request.customer_id).decide(
                        request, record, now, volume=self.volume
                    )
                    if isinstance(record, CustomerRecord)
                    else core.decide(request, None, now, unavailable(record), volume=self.volume),
                    now,
                )
                # Let interactive calls in between: 64 decisions in a row held the event
                # loop ~60 ms, and pages with 50 ms deadlines timed out behind a campaign.
                await asyncio.sleep(0)
            todo = await self._reserve_many(core, requests, decisions, todo, now, attempt == 0)
            if not todo:
                break
        for request, decision in zip(requests, decisions, strict=True):
            self._done(decision, request, now)
        return decisions

    async def _reserve_many(
        self,
        core: DecisionCore,
        requests: Sequence[DecisionRequest],
        decisions: list[Decision],
        indices: Sequence[int],
        now: float,
        again: bool,
    ) -> list[int]:
        """Reserves the decisions at ``indices`` in one pipelined call and applies the
        results; with ``again``, the indices left unapplied to decide again (nothing
        recorded, a volume limit just reached)."""
        policy, offers = core.catalog.contact_policy, core.catalog.by_id
        pending = [
            (i, reservation)
            for i in indices
            if (
                reservation := contact_reservation.reservation(
                    policy, offers, decisions[i], requests[i].channel, now
                )
            )
            is not None
        ]
        if not pending:
            return []
        try:
            results: list[list[str] | ArbiterError] = await self.store.reserve_many(
                [r for _, r in pending]
            )
        except FeatureStoreUnavailable as exc:
            results = [exc] * len(pending)
        retry = []
        for (i, reservation), result in zip(pending, results, strict=True):
            outcome = str(result) if isinstance(result, Exception) else result
            if again and self._volume_reached(reservation, outcome) and not outcome:
                retry.append(i)
                continue
            decisions[i] = _apply_reservation(decisions[i], reservation, outcome)
        return retry

    def _done(self, decision: Decision, request: DecisionRequest, now: float) -> None:
        """A decision made: to the log, and counted when degraded."""
        self.writer.submit(decision, request, now)
        if decision.degraded:
            metrics.degraded(decision.degraded_reason)

    def _signed(self, decision: Decision, now: float) -> Decision:
        """The decision under an id that proves its actions (decision_id.py). Signed before
        the reservation, which records contacts under the id: an action the reservation
        then drops stays verifiable, but its contact was never made."""
        offers = [a.offer_id for a in decision.actions]
        return replace(decision, decision_id=self.ids.new(decision.customer_id, offers, now))

    async def report_outcome(self, outcome: OutcomeRecord) -> tuple[bool, str]:
        """Records an outcome of an action this service made; a forged, tampered or
        foreign decision id, an offer not in that decision, or an outcome stamped before
        its decision changes nothing."""
        offer = self.core.catalog.by_id.get(outcome.offer_id)
        if offer is None:
            raise NotFound(f"offer_id: no offer {outcome.offer_id!r} in the catalog")
        decided_at = self.ids.verify(
            outcome.decision_id, outcome.customer_id, outcome.offer_id, self.core.catalog.by_id
        ).decided_at
        if outcome.occurred_at < decided_at - CLOCK_SKEW_SECONDS:
            raise InvalidArgument("occurred_at", "is before the decision it reports on")
        # Within the allowed skew, an outcome counts from its decision (training's window).
        outcome = replace(outcome, occurred_at=max(outcome.occurred_at, decided_at))
        effects = contact_reservation.outcome_effects(
            offer.policy, outcome.outcome, outcome.occurred_at
        )
        recorded, outcome_id = await self.store.record_outcome(outcome, effects)
        if recorded:
            metrics.OUTCOMES.labels(outcome.outcome).inc()
        return recorded, outcome_id

    async def forget(self, customer_id: str) -> Forgotten:
        """Removes what is kept about the customer. Decisions still queued for the log are
        written first, so that none of theirs survives the forgetting."""
        await self.writer.flush()
        if self.triggers is not None:  # its pending triggers, and when any last fired
            ids = list(self.core.catalog.triggers.by_id)  # runs too
            await self.triggers.forget(customer_id, ids)
        return await self.store.forget(customer_id)

    async def record_event(self, event: EventRecord) -> None:
        if await self.store.record_event(event):  # not a duplicate under its key
            metrics.EVENTS.labels(self.core.schema.counted_event_type(event.event_type)).inc()
        triggers = self.core.catalog.triggers
        # A retried event (a duplicate) too: a failure after recording it must not lose its
        # triggers, and scheduling one already waiting changes nothing.
        if self.triggers is not None and triggers.reacting_to(event.event_type):
            core = self.core_for(event.customer_id)
            await react(event, core, self.store, self.triggers, self.scheduled)

    async def profile(self, customer_id: str) -> Profile:
        core = self.core
        record, history, waiting = await asyncio.gather(
            self.store.fetch(customer_id),
            self.store.history(customer_id),
            self._pending_triggers(customer_id),
        )
        schema, catalog, now = core.schema, core.catalog, time.time()
        features = core.customer_features(record, now)
        env = rule_env(schema.names, features, record.attributes, DecisionRequest(customer_id, ""))
        stage, reason = core.stage_rules.derive(env)
        policies = {o.offer_id: o.policy for o in catalog.offers}
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
            contact_state=contact_views.offer_states(policies, record, now),
            channel_caps=contact_views.channel_uses(catalog.contact_policy, record, now),
            consent=consent_views(record, env, catalog.consent_features),
            stage_transitions=stage_transitions(history),
            pending_triggers=tuple(waiting),
        )

    async def _pending_triggers(self, customer_id: str) -> list[Pending]:
        if self.triggers is None:
            return []
        ids = list(self.core.catalog.triggers.by_id)  # runs too
        return await self.triggers.pending_for(customer_id, ids)
