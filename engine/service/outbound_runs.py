"""Always-on outbound: each day, every run of the catalog (``[[outbound]]``,
engine/core/triggers.Run) goes over the customer base once and schedules, for each
customer of its segment, a trigger of the run's id due at the run's time of day in the
customer's zone. The trigger scheduler fires them as any trigger (consent, caps, quiet
hours, the stream), and re-reads the segment then (trigger_scheduler.py).

A day's pass (its cycle: the UTC date it starts on) is made by one process at a time,
whichever takes the run's lease, page by page, writing where it is after each page
(feature_store/outbound_runs.py): a crash leaves the rest to the next process that
looks, and a page done twice schedules nobody twice. A customer is sent a run's message
at most once per re-eligibility window (12 h unless the run says), counted from the
sends' due times: two replicas whose clocks disagree about whether today's time has
passed do not send it twice.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from common.errors import ArbiterError, FeatureStoreUnavailable
from engine.core.customer import CustomerRecord
from engine.core.decision import DecisionCore, DecisionRequest
from engine.core.triggers import RUN_EVENT, Pending, Run
from engine.service import metrics
from engine.service.application import Application
from feature_store.outbound_runs import RunStore, cursor_of
from feature_store.triggers import SCHEDULED, TriggerQueue

log = logging.getLogger(__name__)

RUNS_SECONDS = 10.0  # how often a process looks for a run whose day's pass is to do
LEASE_SECONDS = 30.0  # a pass's lease: renewed every page, taken over when it lapses
# Customers read (SCAN's count) and scheduled at a time, and the pause between pages:
# decoding and judging a page holds the serving process's loop (500 a page: ~30 ms, and
# Decide's p99 in the same process went from 8 to 26 ms during a pass); 100 and a pause
# leave the callers room
PAGE = 100
PAGE_PAUSE_SECONDS = 0.005
SCHEDULING = 32  # schedule scripts in flight at once during a page
UNREADABLE = "unreadable"  # a profile that could not be decoded (another schema)
NOT_IN_SEGMENT = "not_in_segment"


def cycle_of(now: float) -> str:
    """The cycle a pass started at ``now`` belongs to: the UTC date."""
    return datetime.fromtimestamp(now, UTC).date().isoformat()


class OutboundRuns:
    def __init__(
        self,
        application: Application,
        queue: TriggerQueue,
        runs: RunStore,
        *,
        clock: Callable[[], float] = time.time,
        lease_seconds: float = LEASE_SECONDS,
        page: int = PAGE,
        scheduled: Callable[[str, float], None] | None = None,
    ) -> None:
        self._application = application
        self._queue = queue
        self._runs = runs
        self._clock = clock
        self._lease = lease_seconds
        self._page = page
        self._scheduled = scheduled  # the local scheduler told of each (its wake)
        self._owner = f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    async def run(self, interval: float = RUNS_SECONDS) -> None:
        """Makes the day's pass of each run that has not had it, until cancelled."""
        while True:
            try:
                await self.check()
            except ArbiterError as exc:  # the store away: the next look goes on from there
                log.warning("outbound runs not gone over: %s", exc)
            except Exception:
                log.exception("outbound runs not gone over")
            await asyncio.sleep(interval)

    async def check(self) -> list[str]:
        """Makes today's pass of every run that needs one and is not being made; the runs
        it finished."""
        finished = []
        for run in self._application.core.catalog.triggers.runs:
            if await self.go_over(run):
                finished.append(run.run_id)
        return finished

    async def go_over(self, run: Run) -> bool:
        """Today's pass of ``run``, from where it was left; whether this call ended it."""
        now = self._clock()
        cycle = cycle_of(now)
        state = await self._runs.state(run.run_id, cycle)
        if "finished" in state:
            return False
        if not await self._runs.take(run.run_id, cycle, self._owner, self._lease, now):
            return False  # another process is at it
        try:
            state = await self._runs.state(run.run_id, cycle)  # as the last holder left it
            if "finished" in state:
                return False
            cursor = cursor_of(state)
            log.info("outbound run %s: going over the customer base (%s)", run.run_id, cycle)
            while True:
                ids, cursor = await self._runs.customers(cursor, self._page)
                counts = await self._schedule(run, cycle, ids, self._clock())
                over = not cursor
                kept = await self._runs.advance(
                    run.run_id,
                    cycle,
                    self._owner,
                    cursor,
                    counts,
                    seconds=self._lease,
                    finished=self._clock() if over else None,
                )
                if not kept:
                    log.warning("outbound run %s: lease lost; left to its taker", run.run_id)
                    return False
                await asyncio.sleep(PAGE_PAUSE_SECONDS)
                if over:
                    done = await self._runs.state(run.run_id, cycle)
                    log.info(
                        "outbound run %s: the customer base gone over (%s): %s",
                        run.run_id,
                        cycle,
                        ", ".join(f"{k} {v}" for k, v in sorted(done.items()) if v.isdigit()),
                    )
                    return True
        finally:
            await self._runs.release(run.run_id, self._owner)

    async def _schedule(self, run: Run, cycle: str, ids: Sequence[str], now: float) -> Counter[str]:
        """Schedules the run for those of ``ids`` in its segment; counts by outcome."""
        counts: Counter[str] = Counter(scanned=len(ids))
        if not ids:
            return counts
        core = self._application.core
        records = await self._application.store.fetch_many(list(ids), now)
        due: list[Pending] = []
        for cid, record in zip(ids, records, strict=True):
            if isinstance(record, FeatureStoreUnavailable):
                raise record  # the page is done again, by whoever goes on
            if isinstance(record, ArbiterError):
                counts[UNREADABLE] += 1
                continue
            if not in_segment(run, record, core, now):
                counts[NOT_IN_SEGMENT] += 1
                continue
            zone = core.catalog.contact_policy.quiet_hours.zone(record.attributes)
            due.append(
                Pending(
                    uuid.uuid4().hex,
                    run.run_id,
                    cid,
                    RUN_EVENT,
                    {"run": run.run_id, "cycle": cycle},
                    now,
                    run.next_send(zone or ZoneInfo("UTC"), now),
                )
            )
        for start in range(0, len(due), SCHEDULING):
            chunk = due[start : start + SCHEDULING]
            outcomes = await asyncio.gather(
                *(
                    self._queue.schedule(p, run.trigger.reeligible_seconds, against=p.due)
                    for p in chunk
                )
            )
            for pending, outcome in zip(chunk, outcomes, strict=True):
                counts[outcome] += 1
                metrics.TRIGGERS.labels(run.run_id, outcome).inc()
                if outcome == SCHEDULED and self._scheduled is not None:
                    self._scheduled(pending.customer_id, pending.due)
        return counts


def in_segment(run: Run, record: CustomerRecord, core: DecisionCore, now: float) -> bool:
    """Whether the customer is in the run's segment, as their profile is at ``now``."""
    if run.segment is None:
        return True
    request = DecisionRequest(record.customer_id, run.trigger.channels[0])
    return bool(run.segment(core.customer_env(record, request, now)))
