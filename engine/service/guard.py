"""The one guard around the store on the decision path: every read and reservation a
Decide makes goes through ``StoreGuard``, under a budget cut to the caller's deadline and
a breaker (breaker.py), one per cluster primary as well, so that a store that is down or
slow yields a degraded answer in milliseconds, never an error and never a long wait.

``Store`` is what the service needs of a store: the two protocols of
feature_store/store.py (which declare the guard's needs too: ``cancel_safe``,
``shard_of``, ``shards``) and ``aclose``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any, Protocol, TypeVar

from common.errors import ArbiterError, FeatureStoreUnavailable, ProfileSchemaMismatch
from engine.core.customer import CustomerRecord, Reservation
from engine.service.breaker import Breaker
from feature_store.store import DecisionLog, FeatureStore

# Time kept back from a caller's deadline: to decide and answer after the read (a
# decision takes 1-3 ms here), and to answer after the reservation.
ANSWER_MARGIN = 0.005
RESERVE_MARGIN = 0.002
# A store call cut shorter than this by a caller's deadline says nothing about the store:
# its timeout does not count towards the breaker.
FAIR_BUDGET = 0.005
NO_TIME = "feature store skipped: the caller's deadline leaves no time for it"

T = TypeVar("T")


class Store(FeatureStore, DecisionLog, Protocol):
    """The online store serves features and keeps the logs; the service owns it."""

    async def aclose(self) -> None:
        """Releases connections; the last call."""
        ...


def unavailable(error: ArbiterError) -> str:
    """A degraded answer's reason for a store error."""
    if isinstance(error, ProfileSchemaMismatch):
        return str(error)
    return f"feature store unavailable: {error}"


def budget_before(configured: float, deadline: float | None, margin: float) -> float:
    """The configured timeout, shortened to end ``margin`` before the caller's deadline
    (``time.monotonic()`` seconds)."""
    if deadline is None:
        return configured
    return min(configured, deadline - time.monotonic() - margin)


def _ms(seconds: float) -> str:
    return f"{round(seconds * 1000, 1):g}"


class StoreGuard:
    """Reads and reservations of the decision path, each within its budget and behind
    the breaker of the customer's part of the store: a result, or why there is none."""

    def __init__(
        self,
        store: FeatureStore,
        *,
        feature_timeout: float = 0.03,
        reserve_timeout: float = 0.05,
        breaker_seconds: float = 0.5,
    ) -> None:
        self.store = store
        self.feature_timeout = feature_timeout
        self.reserve_timeout = reserve_timeout
        # One breaker for the store; on a cluster one per primary as well (``shard_of``):
        # a primary that fails over degrades its own customers only.
        self.breaker = Breaker(breaker_seconds)
        self._shards: dict[str, Breaker] = {}

    def breaker_for(self, customer_id: str) -> Breaker:
        """The breaker guarding ``customer_id``'s part of the store."""
        shard = self.store.shard_of(customer_id)
        if not shard:
            return self.breaker
        breaker = self._shards.get(shard)
        if breaker is None:  # a primary not seen before: the layout changed
            breaker = self._shards[shard] = Breaker(self.breaker.seconds, shard)
            self._retire_shards()
        return breaker

    def stopped(self) -> None:
        """The service stops: its breakers no longer show the store as down."""
        for breaker in (self.breaker, *self._shards.values()):
            breaker.stopped()

    def _retire_shards(self) -> None:
        """Drops the breakers of primaries the store no longer has (failed over)."""
        current = self.store.shards()
        if not current:
            return  # the layout is not known: keep them
        for gone in [s for s in self._shards if s not in current]:
            self._shards.pop(gone).retired()

    async def fetch(
        self, customer_id: str, deadline: float | None
    ) -> tuple[CustomerRecord | None, str]:
        """The customer's record, or None and why (the degraded answer's reason)."""
        breaker = self.breaker_for(customer_id)
        refusal = breaker.refusal()
        if refusal:
            return None, refusal
        budget = budget_before(self.feature_timeout, deadline, ANSWER_MARGIN)
        if budget <= 0:
            return None, NO_TIME
        started = time.monotonic()
        try:
            record = await self._within(self.store.fetch(customer_id), budget)
        except TimeoutError:
            reason = f"feature store unavailable: slower than {_ms(budget)} ms"
            if budget >= FAIR_BUDGET:  # a store that misses a fair budget is slow
                breaker.timed_out(reason, customer_id, started)
            return None, reason
        except ProfileSchemaMismatch as exc:
            return None, unavailable(exc)  # this profile only: the store itself is fine
        except FeatureStoreUnavailable as exc:
            reason = unavailable(exc)
            self._failed(breaker, exc, reason, customer_id, started, budget)
            return None, reason
        breaker.succeeded()
        return record, ""

    async def reserve(self, reservation: Reservation, deadline: float | None) -> list[str] | str:
        """The offers reserved, or why not. The breaker covers the reservation as it does
        the read: while it is open nothing waits on the store, so a degraded answer takes
        milliseconds, not the read budget plus the reservation's."""
        breaker = self.breaker_for(reservation.customer_id)
        refusal = breaker.refusal()
        if refusal:
            return refusal
        budget = budget_before(self.reserve_timeout, deadline, RESERVE_MARGIN)
        if budget <= 0:
            return NO_TIME
        started = time.monotonic()
        try:
            reserved = await self._within(self.store.reserve(reservation), budget)
        except TimeoutError:
            reason = f"slower than {_ms(budget)} ms"
            if budget >= FAIR_BUDGET:
                breaker.timed_out(
                    f"feature store unavailable: contact reservation {reason}",
                    reservation.customer_id,
                    started,
                )
            return reason
        except FeatureStoreUnavailable as exc:
            self._failed(breaker, exc, unavailable(exc), reservation.customer_id, started, budget)
            return str(exc)
        breaker.succeeded()
        return reserved

    async def _within(self, call: Coroutine[Any, Any, T], budget: float) -> T:
        """``call`` within ``budget`` seconds, else TimeoutError. A store whose calls can be
        cancelled anywhere (``cancel_safe``: the hot connections, with no timeout of
        their own in the way) runs under ``asyncio.timeout`` in this task; others under
        ``wait_for``, a task of their own: redis-py runs its reads under its own
        ``asyncio.timeout``, and with ours around it one full test run errored in the
        tight-deadline test. (Measured, sequential decide(): p50 0.54 -> 0.47-0.51 ms
        without the two tasks.)"""
        if self.store.cancel_safe:
            async with asyncio.timeout(budget):
                return await call
        return await asyncio.wait_for(call, budget)

    @staticmethod
    def _failed(
        breaker: Breaker,
        exc: FeatureStoreUnavailable,
        reason: str,
        customer_id: str,
        started: float,
        budget: float,
    ) -> None:
        """An error opens the breaker at once; a socket timeout (the store, or our own
        loop, too slow to connect or answer) counts as a slow call, like a budget missed."""
        if not exc.timed_out:
            breaker.failed(reason, exc.detail)
        elif budget >= FAIR_BUDGET:
            breaker.timed_out(reason, customer_id, started)
