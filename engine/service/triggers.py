"""What an event does to triggers: cancels those it cancels, schedules those it matches
(engine/core/triggers.py; the scheduler that fires them: trigger_scheduler.py)."""

from __future__ import annotations

import time
import uuid
from typing import Protocol

from engine.core.decision import DecisionCore, DecisionRequest, rule_env
from engine.core.triggers import Pending, kept_attributes
from engine.service import metrics
from engine.service.guard import Store
from feature_store.store import EventRecord
from feature_store.triggers import SCHEDULED, TriggerQueue


class LocalScheduler(Protocol):
    """This process's trigger scheduler (trigger_scheduler.py), as an event sees it."""

    def wake(self, customer_id: str, due: float) -> None:
        """A trigger was scheduled for ``customer_id`` at ``due``."""

    def lease_now(self) -> float | None:
        """Until when a trigger due now that it fires at once is claimed; None when it
        has no room for one (the trigger then waits for a claim, as any)."""

    def fire_now(self, pending: Pending) -> None:
        """Fires ``pending``, scheduled as claimed until ``lease_now()``, at once."""


async def react(
    event: EventRecord,
    core: DecisionCore,
    store: Store,
    queue: TriggerQueue,
    local: LocalScheduler | None,
) -> None:
    """Cancels the customer's triggers ``event`` cancels, and schedules those it matches
    (their conditions over the event and the profile, as it is with the event counted).
    ``local`` is told of each scheduled; one due at once it fires itself, scheduled as
    claimed by it (no claim's round trip; if it dies, another takes it when the claim
    lapses, as any)."""
    triggers = core.catalog.triggers
    customer_id = event.customer_id
    cancelling = [t.trigger_id for t in triggers.cancelled_by.get(event.event_type, ())]
    for trigger_id in await queue.cancel(customer_id, cancelling):
        metrics.TRIGGERS.labels(trigger_id, "cancelled").inc()
    if event.event_type not in triggers.scheduled_by:
        return
    now = time.time()
    env: dict[str, object] = {}
    if any(t.condition is not None for t in triggers.scheduled_by[event.event_type]):
        record = await store.fetch(customer_id, now)  # only a condition needs the profile
        request = DecisionRequest(customer_id, event.channel, context=event.attributes)
        features = core.customer_features(record, now)
        env = rule_env(core.schema.names, features, record.attributes, request)
    for trigger in triggers.matching(event.event_type, env):
        pending = Pending(
            uuid.uuid4().hex,
            trigger.trigger_id,
            customer_id,
            event.event_type,
            kept_attributes(event.attributes),
            now,
            # after the event by the delay; a late event's at once
            max(now, event.occurred_at + trigger.delay_seconds),
        )
        lease = local.lease_now() if local is not None and pending.due <= now else None
        outcome = await queue.schedule(pending, trigger.reeligible_seconds, claimed_until=lease)
        metrics.TRIGGERS.labels(trigger.trigger_id, outcome).inc()
        if outcome == SCHEDULED and local is not None:
            if lease is not None:
                local.fire_now(pending)
            else:
                local.wake(customer_id, pending.due)
