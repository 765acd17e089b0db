"""The feature-store breaker: after the store failed, decisions answer degraded without
trying it (neither the read nor the contact reservation) for a while, so later calls do
not wait on it again. That while backs off: ``FIRST_OPEN_SECONDS`` the first time,
doubled each time it opens again without the store having served a call, up to
``seconds``; each drawn between half of it and all of it (jitter: the workers and
replicas that lost one Redis together do not try it again in the same millisecond). So a
blip (a connection reset, a fast failover) degrades for tens of milliseconds, a long
outage is tried about every ``seconds``, and the service is whole again at most
``seconds`` after the store is.

It opens at the first error, but only after ``TIMEOUTS_TO_OPEN`` calls in a row over their
budget (reads and reservations alike), for at least two customers: a slow key (one
customer's state read slowly) is not a slow store, and must not degrade everyone. And under
a burst of CPU load a single read can miss its budget in our own event loop, and that
must not degrade every customer for the next second. Nor must a stall of that loop (a
garbage collection, a burst of CPU): every call in flight then misses its budget at once,
Redis having answered or not. So calls that were in flight together count as one: a
timeout counts only when its call started after the last one counted.

When the open period ends while the store is still taken for down, one call at a time
tries it (half-open): the others keep answering degraded at once instead of each waiting
its budget on a store that may still be gone. The probe's outcome closes the breaker or
opens it again; a probe that tells neither within ``PROBE_SECONDS`` is given up.

An outage is two WARNING lines, whatever its length: "down" when the breaker first opens,
"back" once the store has served calls for ``BACK_AFTER_SECONDS`` without failing one (on
a cluster with a primary gone, calls to the live primaries succeed between those to the
dead one: that is not "back" yet).
"""

from __future__ import annotations

import logging
import time
import weakref

from common.backoff import jittered
from engine.service import metrics

log = logging.getLogger(__name__)

TIMEOUTS_TO_OPEN = 3
FIRST_OPEN_SECONDS = 0.05
PROBE_SECONDS = 1.0
BACK_AFTER_SECONDS = 1.0

# The process's breakers that are open now; the gauge says whether any is. One breaker
# closing must not hide another still open (a cluster's primaries each have one), and a
# stopped service's breaker must not leave the gauge at 1 for the next (nor one nobody
# holds any more: it guards nothing).
_OPEN: weakref.WeakSet[Breaker] = weakref.WeakSet()


def _shown(breaker: Breaker, is_open: bool) -> None:
    if is_open:
        _OPEN.add(breaker)
    else:
        _OPEN.discard(breaker)
    metrics.BREAKER_OPEN.set(1 if _OPEN else 0)


class Breaker:
    def __init__(self, seconds: float, where: str = "") -> None:
        """``where``: the part of the store it guards (a cluster primary), for its log
        lines; "" for the whole store."""
        self.seconds = seconds
        self._where = f" at {where}" if where else ""
        self.opened = 0  # times it opened (diagnostics)
        self._open_until = 0.0
        self._reason = ""
        self._timeouts = 0  # calls in a row that missed their budget
        self._slow_customers: set[str] = set()  # whose calls they were
        self._counted_at = float("-inf")  # when the last counted timeout was seen
        # times opened since a call last succeeded: the back-off's step; while above 0,
        # calls after an open period are half-open probes
        self._trips = 0
        self._down_since: float | None = None  # the outage said "down": when it began
        self._healthy_since: float | None = None  # since then, serving calls without a failure
        self._probe_since: float | None = None  # the half-open probe in flight: since when
        self._last_reason = ""  # why it last opened

    def retired(self) -> None:
        """What it guarded is gone (a cluster primary whose slots another one serves
        now): an outage it said "down" for ends here."""
        _shown(self, False)
        if self._down_since is not None:
            log.warning(
                "feature store%s gone after %.1f s: its slots are served elsewhere",
                self._where,
                time.monotonic() - self._down_since,
            )
            self._down_since = None

    def stopped(self) -> None:
        """The service stops: the gauge no longer counts this breaker as open."""
        _shown(self, False)

    def refusal(self) -> str:
        """Why the store must not be tried now, or "" when it may (during an outage: for
        one caller at a time, the probe)."""
        now = time.monotonic()
        if now < self._open_until:
            return self._reason
        if self._reason:  # the open period is over: shown closed again
            self._reason = ""
            _shown(self, False)
        if self._trips:
            probing = self._probe_since
            if probing is not None and now - probing < PROBE_SECONDS:
                return self._last_reason  # another call is finding out
            self._probe_since = now
        return ""

    def succeeded(self) -> None:
        self._timeouts = 0
        self._trips = 0
        self._slow_customers.clear()
        self._probe_since = None
        if self._down_since is not None:
            now = time.monotonic()
            if self._healthy_since is None:
                self._healthy_since = now
            elif now - self._healthy_since >= BACK_AFTER_SECONDS:
                log.warning(
                    "feature store%s back after %.1f s: full answers again",
                    self._where,
                    self._healthy_since - self._down_since,
                )
                self._down_since = self._healthy_since = None

    def timed_out(self, reason: str, customer_id: str, started: float) -> None:
        """A call for ``customer_id`` that began at ``started`` (``time.monotonic()``)
        missed its budget."""
        if self._probe_since is not None:
            self.failed(reason)  # the probe of a store that was down: still down
            return
        if started < self._counted_at:
            return  # in flight with the last one counted: the same stall
        self._counted_at = time.monotonic()
        self._timeouts += 1
        self._slow_customers.add(customer_id)
        if self._timeouts >= TIMEOUTS_TO_OPEN and len(self._slow_customers) > 1:
            self.failed(reason)

    def failed(self, reason: str, detail: str = "") -> None:
        """The store failed: ``reason`` is what degraded answers say while it is open;
        ``detail`` (Redis's words, its address) goes to the "down" line only."""
        self._timeouts = 0
        self._slow_customers.clear()
        self.opened += 1
        self._trips += 1
        wait = jittered(self._trips, FIRST_OPEN_SECONDS, self.seconds)
        self._open_until = time.monotonic() + wait
        self._reason = self._last_reason = reason
        self._probe_since = None
        self._healthy_since = None
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning(
                "feature store%s down (%s): answering degraded, without profiles or"
                " reservations; trying it again every %.1f s at most",
                self._where,
                f"{reason}: {detail}" if detail else reason,
                self.seconds,
            )
        metrics.BREAKER_OPENED.inc()
        _shown(self, True)
