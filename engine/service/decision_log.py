"""Writes decisions to the decision log in the background, in batches.

``submit`` only enqueues (microseconds on the request path); a task turns decisions into
log entries and appends them in one pipeline per batch. When the store is unavailable the
batch is retried with backoff while the bounded queue holds; when the queue is full, new
decisions are dropped and counted in ``dropped`` (the caller never waits for the log).
An outage is two WARNING lines: "writes failing" at the first failed write, "writing
again" at the first one after it, with how many decisions waited and were dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from common import waits
from common.errors import FeatureStoreUnavailable
from engine.service import metrics
from feature_store.store import LoggedDecision

if TYPE_CHECKING:  # the log process imports this module, not the decision core
    from engine.core.decision import Decision, DecisionRequest

log = logging.getLogger(__name__)
# A failed write is tried again after 50 ms, doubled each time up to half a second: the log
# catches up within half a second of Redis being back. While a flush waits (a graceful
# stop), every 50 ms.
RETRY_FIRST = 0.05
RETRY_MOST = 0.5
# The writer shares the event loop with the calls: it builds at most this many entries
# (~50 us each at 100 candidates) before letting them run.
YIELD_EVERY = 8


def log_entry(
    decision: Decision, request: DecisionRequest, now: float, names: tuple[str, ...]
) -> LoggedDecision:
    """The decision as the log keeps it: the inputs exactly as served, compactly (about
    1 KB a decision in Redis with the demo catalog; see docs/redis-keys.md)."""
    entry: Mapping[str, Any] = {
        "decision_id": decision.decision_id,
        "ts": now,
        "customer_id": decision.customer_id,
        "request_id": request.request_id,
        "placement": request.placement,
        "context": dict(request.context),
        "stage_reason": decision.stage_reason,
        "model_version": decision.model_version,
        "layer_version": decision.layer_version,
        "catalog_version": decision.catalog_version,
        "degraded": decision.degraded_reason,
        "excluded": dict(decision.excluded),
        # channel, stage, features and the offer-level inputs exactly as served
        **decision.served.to_log(names),
        # [offer, propensity]: the batch model's (the action's propensity is the online
        # layer's; the priority follows from it and the catalog version's value x lever)
        "candidates": [
            list(row)
            for row in zip(
                decision.candidates.offer_ids,
                decision.candidates.propensity.tolist(),
                strict=True,
            )
        ],
        "actions": [
            {
                "offer_id": a.offer_id,
                "rank": a.rank,
                "probability": a.probability,
                "propensity": a.propensity,
                "priority": a.priority,
                "treatment": a.message.treatment_id,
                # why, compactly: the sentences follow from the codes, catalog and stage
                "reasons": [
                    [r.code, r.feature, round(r.contribution, 6)] if r.feature else [r.code]
                    for r in a.reasons
                ],
            }
            for a in decision.actions
        ],
    }
    summary = {
        "decision_id": decision.decision_id,
        "ts": now,
        "stage": decision.stage,
        "stage_reason": decision.stage_reason,
        "channel": request.channel,
        "placement": request.placement,
        "actions": [[a.offer_id, a.rank] for a in decision.actions],
    }
    return LoggedDecision(decision.customer_id, entry, summary)


Pending = tuple["Decision", "DecisionRequest", float] | LoggedDecision


class Appends(Protocol):
    """Where the writer appends: the store's decision log, or the log process's appender."""

    async def append_decisions(self, decisions: Sequence[LoggedDecision]) -> None: ...


class LogWriter(Protocol):
    """What the service needs of a decision-log writer: this module's, or the log
    process (engine/service/log_process.py)."""

    written: int
    dropped: int

    def start(self) -> None: ...

    async def ready(self, timeout: float = 10.0) -> bool: ...

    def submit(self, decision: Decision, request: DecisionRequest, now: float) -> None: ...

    @property
    def pending(self) -> int: ...

    async def flush(self, timeout: float = 5.0) -> bool: ...

    async def close(self, timeout: float = 5.0) -> None: ...


class DecisionLogWriter:
    """``names``: the schema's feature names, as entries list the features served;
    ``on_written``: called with the count of each batch written (the log process
    acknowledges with it)."""

    def __init__(
        self,
        log_: Appends,
        names: tuple[str, ...],
        *,
        max_queue: int = 10_000,
        batch: int = 256,
        on_written: Callable[[int], None] | None = None,
    ) -> None:
        self._log = log_
        self._names = names
        self._queue: asyncio.Queue[Pending] = asyncio.Queue(max_queue)
        self._batch = batch
        self._on_written = on_written
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        self.written = 0
        self._hurry = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="decision-log")

    async def ready(self, timeout: float = 10.0) -> bool:
        return True

    def submit(self, decision: Decision, request: DecisionRequest, now: float) -> None:
        self._put((decision, request, now))

    def submit_logged(self, logged: LoggedDecision) -> None:
        """An entry already built (the log process receives them so)."""
        self._put(logged)

    def _put(self, item: Pending) -> None:
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1
            metrics.LOG_DROPPED.inc()

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    async def _run(self) -> None:
        backoff = RETRY_FIRST
        failing_since: float | None = None  # the first failed write of an outage
        dropped_before = 0  # decisions dropped before it
        while True:
            items = [await self._queue.get()]
            while len(items) < self._batch and not self._queue.empty():
                items.append(self._queue.get_nowait())
            while True:
                try:
                    batch = []
                    for item in items:
                        batch.append(
                            item
                            if isinstance(item, LoggedDecision)
                            else log_entry(*item, self._names)
                        )
                        if len(batch) % YIELD_EVERY == 0:
                            await asyncio.sleep(0)  # let calls in flight run in between
                    await self._log.append_decisions(batch)
                    self.written += len(batch)
                    metrics.LOG_WRITTEN.inc(len(batch))
                    metrics.LOG_QUEUE.set(self.pending)
                    if self._on_written is not None:
                        self._on_written(len(batch))
                    backoff = RETRY_FIRST
                    if failing_since is not None:
                        log.warning(
                            "decision log: writing again after %.1f s: %d decisions had"
                            " waited, %d dropped for a full queue",
                            time.monotonic() - failing_since,
                            self.pending + len(batch),
                            self.dropped - dropped_before,
                        )
                        failing_since = None
                    break
                except FeatureStoreUnavailable as exc:
                    if failing_since is None:
                        failing_since, dropped_before = time.monotonic(), self.dropped
                        log.warning(
                            "decision log: writes failing (%s%s); decisions wait in a queue"
                            " of %d and are written once Redis is back",
                            exc,
                            f": {exc.detail}" if exc.detail else "",
                            self._queue.maxsize,
                        )
                    metrics.LOG_QUEUE.set(self.pending + len(items))
                    backoff = await self._pause(backoff)
                except Exception:  # a bug, not an outage: drop the batch, keep the writer
                    log.exception("decision log: dropping %d decisions", len(items))
                    self.dropped += len(items)
                    metrics.LOG_DROPPED.inc(len(items))
                    break
            for _ in items:
                self._queue.task_done()

    async def _pause(self, backoff: float) -> float:
        """Waits ``backoff`` seconds before a failed write is tried again; the next wait.
        A flush (a graceful stop) cuts the wait to ``RETRY_FIRST``, never to nothing: a
        store that stays down is not retried in a spin."""
        if not self._hurry.is_set():
            await waits.until_set(self._hurry, backoff)
        if self._hurry.is_set():
            await asyncio.sleep(RETRY_FIRST)
            return RETRY_FIRST
        return min(backoff * 2, RETRY_MOST)

    async def flush(self, timeout: float = 5.0) -> bool:
        """Waits until everything submitted is written; False on timeout. A writer waiting
        out a backoff tries again at once."""
        self._hurry.set()
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self._hurry.clear()

    async def close(self, timeout: float = 5.0) -> None:
        if not await self.flush(timeout):
            log.error("decision log: %d decisions not written at shutdown", self.pending)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(TimeoutError):  # a write stuck in a dead socket
                await asyncio.wait_for(asyncio.gather(self._task, return_exceptions=True), timeout)
