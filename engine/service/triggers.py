"""What an event does to triggers: cancels those it cancels, schedules those it matches
(engine/core/triggers.py; the scheduler that fires them: trigger_scheduler.py)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from engine.core.decision import DecisionCore, DecisionRequest
from engine.core.triggers import Pending, kept_attributes
from engine.service import metrics
from engine.service.guard import Store
from feature_store.store import EventRecord
from feature_store.triggers import SCHEDULED, TriggerQueue


async def react(
    event: EventRecord,
    core: DecisionCore,
    store: Store,
    queue: TriggerQueue,
    scheduled: Callable[[str, float], None] | None,
) -> None:
    """Cancels the customer's triggers ``event`` cancels, and schedules those it matches
    (their conditions over the event and the profile, as it is with the event counted);
    ``scheduled(customer_id, due)`` is told of each scheduled."""
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
        env = core.customer_env(record, request, now)
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
        outcome = await queue.schedule(pending, trigger.reeligible_seconds)
        metrics.TRIGGERS.labels(trigger.trigger_id, outcome).inc()
        if outcome == SCHEDULED and scheduled is not None:
            scheduled(customer_id, pending.due)
