"""Fires due event triggers: each decided with the ordinary decision core, its message put
on the channel's delivery stream once (feature_store/triggers.py says how a crash at any
point neither loses nor repeats one).

Every serving process runs one. It knows when each bucket's next trigger is due (each
claim says), claims a bucket when something in it is due, and looks at every bucket
at least every ``poll`` seconds for what other replicas scheduled; an event this process
scheduled for now wakes it at once (``wake``).

A due trigger is decided on its channels in order, with the trigger's id and the event's
attributes in the request's context (so the decision log, outcomes, training and what-if
see it as any decision). The first channel with an action sends. Quiet hours on every
channel tried move it to their end in the customer's zone; anything else the policy says
(a cap, consent, a cool-down, no eligible offer) ends it, counted by reason. An outbound
run's trigger (outbound_runs.py) is first checked against the run's segment as the
profile is now, and its fate counted in the run's day's summary.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable

from common import waits
from common.errors import ArbiterError
from engine.core.decision import Decision, DecisionRequest
from engine.core.triggers import RUN_EVENT, Pending, Trigger
from engine.service import metrics
from engine.service.application import Application
from engine.service.outbound_runs import in_segment
from feature_store import keys
from feature_store.outbound_runs import RunStore
from feature_store.triggers import TriggerQueue

log = logging.getLogger(__name__)

LEASE_SECONDS = 30.0  # a claim another scheduler waits out before taking the trigger
POLL_SECONDS = 1.0  # every bucket looked at, at least this often
BATCH = 100  # triggers claimed from a bucket at a time
COUNT_SECONDS = 10.0  # how often the triggers waiting are counted (the metric)
PAUSED_SECONDS = 30.0  # a paused trigger (or channel) is looked at again this much later
LEFT_SEGMENT = "no longer in the run's segment"
PAUSES_SECONDS = 0.5  # what is paused is read again at most this often (a pause: at once)
# Decided at once by one process: outbound shares the decision path's budgets and
# breakers with the callers, so it must not flood them (measured: 1,600 at once on a busy
# machine missed the 50 ms reservation budget, degraded, and waited out their leases).
CONCURRENCY = 16
# Claimed and not yet done, at most: a claim waits for room rather than hold triggers
# past their lease
MAX_IN_FLIGHT = 4 * CONCURRENCY


def why_not(decision: Decision) -> str:
    """The kind of reason a decision sent nothing: what kept the channel out (the part
    before its details), else that every offer was kept out on its own, else none was
    eligible (or the store could not be read)."""
    if decision.degraded:
        return "degraded"
    channel_wide = decision.excluded.get("*", "")
    if channel_wide:
        return channel_wide.split(":", 1)[0]
    if decision.excluded:
        return "every offer kept out on its own"
    return "no eligible offer"


def message_fields(
    pending: Pending, trigger: Trigger, channel: str, decision: Decision
) -> dict[str, str]:
    """A stream message: what a sender needs (docs/outbound.md)."""
    action = decision.actions[0]
    copy = {k: str(v) for k, v in dataclasses.asdict(action.message).items() if v}
    return {
        "message_id": pending.schedule_id,  # the idempotency key: one message per id
        "decision_id": decision.decision_id,
        "customer_id": pending.customer_id,
        "channel": channel,
        "offer_id": action.offer_id,
        "trigger_id": trigger.trigger_id,
        "event_type": pending.event_type,
        "stage": decision.stage,
        "message": json.dumps(copy, separators=(",", ":")),
        "created_at": f"{time.time():.3f}",
    }


class TriggerScheduler:
    def __init__(
        self,
        application: Application,
        queue: TriggerQueue,
        *,
        clock: Callable[[], float] = time.time,
        lease_seconds: float = LEASE_SECONDS,
        runs: RunStore | None = None,
    ) -> None:
        self._application = application
        self._queue = queue
        self._runs = runs  # where outbound runs' sends are counted (None: not counted)
        self._clock = clock
        self._lease = lease_seconds
        self._next = [0.0] * keys.TRIGGER_BUCKETS  # when each bucket next has one due
        self._woken = asyncio.Event()
        self._slots = asyncio.Semaphore(CONCURRENCY)
        self._paused: frozenset[str] = frozenset()  # what operators paused, as last read
        self._paused_at = -math.inf
        self._wakes = [0] * keys.TRIGGER_BUCKETS  # triggers scheduled here, by bucket
        self._in_flight: set[asyncio.Task[None]] = set()
        self._failures: list[str] = []  # why triggers were not fired, since last said
        self._looked = -math.inf  # when every bucket was last looked at

    def wake(self, customer_id: str, due: float) -> None:
        """A trigger was scheduled for ``customer_id`` at ``due``."""
        bucket = keys.trigger_bucket(customer_id)
        self._next[bucket] = min(self._next[bucket], due)
        self._wakes[bucket] += 1  # a claim in flight must not overwrite this
        if due <= self._clock():
            self._woken.set()

    async def run(self, poll: float = POLL_SECONDS) -> None:
        """Claims and fires until cancelled: what is due is claimed while earlier triggers
        are still being decided (at most MAX_IN_FLIGHT at once)."""
        try:
            await self._run(poll)
        finally:  # stopped: what is being decided is left to its lease, for whoever is next
            for task in list(self._in_flight):
                task.cancel()
            await asyncio.gather(*self._in_flight, return_exceptions=True)

    async def _run(self, poll: float) -> None:
        counted = -math.inf
        while True:
            self._woken.clear()
            try:
                await self._start(poll)
                if self._clock() - counted >= COUNT_SECONDS:
                    counted = self._clock()
                    await self._read_backlogs()
                failed = False
            except ArbiterError as exc:  # the store away: the triggers wait in it
                log.debug("triggers not claimed: %s", exc)
                failed = True
            except Exception:
                log.exception("triggers not fired")
                failed = True
            self._say_failures()
            now = self._clock()
            if failed or len(self._in_flight) > MAX_IN_FLIGHT // 2:
                wait = poll  # the store away, or no room: until a round's room (_done)
            else:
                wait = min(min(self._next) - now, self._looked + poll - now, poll)
            if wait > 0:
                await waits.until_set(self._woken, wait)

    async def tick(self, poll: float = POLL_SECONDS) -> int:
        """Claims what is due (every bucket when ``poll`` has passed) and fires it, waiting
        for those fired; how many triggers it handled."""
        started = await self._start(poll)
        await asyncio.gather(*started)
        self._say_failures()
        return len(started)

    async def _read_backlogs(self) -> None:
        """The metrics read from Redis: triggers waiting, and the senders' backlogs."""
        metrics.TRIGGERS_WAITING.set(await self._queue.waiting())
        for channel in sorted(self._application.core.catalog.contact_policy.outbound):
            for group, unacknowledged, unread in await self._queue.readers(channel):
                gauge = metrics.OUTBOUND_READERS
                gauge.labels(channel, group, "unacknowledged").set(unacknowledged)
                if unread is not None:
                    gauge.labels(channel, group, "unread").set(unread)

    async def _start(self, poll: float) -> list[asyncio.Task[None]]:
        """Claims what is due, as much as there is room for, and starts firing it."""
        room = MAX_IN_FLIGHT - len(self._in_flight)
        now = self._clock()
        every = now - self._looked >= poll
        buckets = [b for b in range(keys.TRIGGER_BUCKETS) if every or self._next[b] <= now]
        if room < MAX_IN_FLIGHT // 2 or not buckets:  # claims in rounds, not one a slot
            return []
        if every:
            self._looked = now
        wakes = [self._wakes[b] for b in buckets]
        limit = max(1, min(BATCH, room // len(buckets)))
        claims = await asyncio.gather(
            *(self._queue.claim(b, now, self._lease, limit) for b in buckets)
        )
        due: list[tuple[Pending, bool]] = []
        if any(claimed for claimed, _ in claims) and now - self._paused_at >= PAUSES_SECONDS:
            self._paused, self._paused_at = await self._queue.paused(), now
        for bucket, woke, (claimed, next_due) in zip(buckets, wakes, claims, strict=True):
            if len(claimed) == limit:
                next_due = now  # a full batch: more may be due at once
            # one scheduled while the claim was in flight keeps its place
            changed = self._wakes[bucket] != woke
            self._next[bucket] = min(next_due, self._next[bucket]) if changed else next_due
            due.extend(claimed)
        started = []
        for pending, again in due:
            task = asyncio.get_running_loop().create_task(self._fire_one(pending, again))
            self._in_flight.add(task)
            task.add_done_callback(self._done)
            started.append(task)
        return started

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        if len(self._in_flight) == MAX_IN_FLIGHT // 2:
            self._woken.set()  # room for a round: anything due waiting for it is claimed

    async def _fire_one(self, pending: Pending, again: bool) -> None:
        try:
            async with self._slots:
                await self.fire(pending, again=again)
        except ArbiterError as exc:  # tried again when its claim lapses
            self._failures.append(str(exc))

    def _say_failures(self) -> None:
        """One line for the triggers a failing store left unfired since the last, not one
        a trigger: an outage fails them all."""
        failed, self._failures = self._failures, []
        if failed:
            log.warning(
                "%d due triggers not fired (%s); tried again when their claims lapse, %.0f s on",
                len(failed),
                failed[0],
                self._lease,
            )

    async def fire(self, pending: Pending, *, again: bool = True) -> str:
        """Decides one due trigger: "fired", "deferred" (quiet hours), "paused" (by an
        operator: looked at again PAUSED_SECONDS later), "suppressed" or "removed".
        ``again``: it was claimed before, by a scheduler that may have died after putting
        it on the stream (which is then looked at first)."""
        queue, now = self._queue, self._clock()
        trigger = self._application.core.catalog.triggers.by_id.get(pending.trigger_id)
        if trigger is None:  # taken out of the catalog while it waited
            await queue.complete(pending, now, fired=False)
            return self._count(pending.trigger_id, "removed")
        if again and await queue.sent(trigger.channels, pending.schedule_id):  # not completed
            await queue.complete(pending, now, fired=True)
            return self._count(pending.trigger_id, "fired")
        paused = self._paused
        channels = [c for c in trigger.channels if f"channel:{c}" not in paused]
        if f"trigger:{trigger.trigger_id}" in paused or not channels:
            await queue.defer(pending, now + PAUSED_SECONDS)  # waits, then looked at again
            return self._count(trigger.trigger_id, "paused")
        run = self._application.core.catalog.triggers.run_by_id.get(trigger.trigger_id)
        if run is not None and run.segment is not None:  # still in it, as it is now
            record = await self._application.store.fetch(pending.customer_id, now)
            if not in_segment(run, record, self._application.core, now):
                return await self._suppressed(pending, now, LEFT_SEGMENT)
        quiet_until = math.inf
        reason = ""
        for channel in channels:
            decision = await self._application.decide(
                self._request(pending, trigger, channel), now=now
            )
            if decision.degraded:
                raise ArbiterError(f"degraded decision ({decision.degraded_reason})")
            if decision.actions:
                fields = message_fields(pending, trigger, channel, decision)
                await queue.publish(channel, pending.schedule_id, fields)
                await queue.complete(pending, now, fired=True)
                metrics.OUTBOUND.labels(channel).inc()
                metrics.TRIGGER_DELAY.observe(max(0.0, self._clock() - pending.due))
                await self._ran(pending, "sent")
                return self._count(trigger.trigger_id, "fired")
            kind = why_not(decision)
            reason = reason or kind
            if kind == "quiet hours":
                quiet_until = min(quiet_until, await self._quiet_until(pending, channel, now))
        if quiet_until < math.inf and await queue.defer(pending, quiet_until):
            return self._count(trigger.trigger_id, "deferred")
        return await self._suppressed(pending, now, reason)

    async def _suppressed(self, pending: Pending, now: float, reason: str) -> str:
        await self._queue.complete(pending, now, fired=False)
        metrics.TRIGGERS_SUPPRESSED.labels(pending.trigger_id, reason).inc()
        await self._ran(pending, f"suppressed:{reason}")
        return self._count(pending.trigger_id, "suppressed")

    async def _ran(self, pending: Pending, field: str) -> None:
        """An outbound run's message sent or suppressed, counted for its day's summary."""
        if pending.event_type != RUN_EVENT or self._runs is None:
            return
        try:
            await self._runs.count(pending.trigger_id, pending.event.get("cycle", ""), field)
        except ArbiterError as exc:  # the message's fate is settled; only the count is lost
            log.debug("outbound run count not kept: %s", exc)

    def _request(self, pending: Pending, trigger: Trigger, channel: str) -> DecisionRequest:
        context = {**pending.event, "trigger": trigger.trigger_id, "event_type": pending.event_type}
        return DecisionRequest(
            pending.customer_id,
            channel,
            placement=trigger.placement,
            context=context,
            offer_ids=trigger.offers,
            request_id=pending.schedule_id,
        )

    async def _quiet_until(self, pending: Pending, channel: str, now: float) -> float:
        """When the quiet hours holding ``channel`` end for this customer (in their zone)."""
        record = await self._application.store.fetch(pending.customer_id, now)
        quiet = self._application.core.catalog.contact_policy.quiet_hours
        end = quiet.end_after(channel, record.attributes, now)
        return end if end is not None else now + POLL_SECONDS

    @staticmethod
    def _count(trigger_id: str, outcome: str) -> str:
        metrics.TRIGGERS.labels(trigger_id, outcome).inc()
        return outcome
