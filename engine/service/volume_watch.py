"""Every replica knows, within ``interval``, which volume limits over the whole customer
base are reached (engine/core/contact_rules.Volume): a task reads the counters of the
periods now running and hands them to the decision core, which keeps an offer or a
channel at its limit out and chooses the next best (no Redis call per decision).

The read is advisory: the store's claim at reservation time is what holds a limit
exactly, across replicas (contact_reservation.claim). A decision that meets a limit
reached since the last read is decided again without it (Application.decide).
"""

from __future__ import annotations

import asyncio
import logging
import time

from common.errors import ArbiterError
from engine.service import metrics
from engine.service.application import Application

log = logging.getLogger(__name__)


class VolumeWatch:
    def __init__(self, application: Application) -> None:
        self._application = application

    async def check(self) -> None:
        """Reads the counters of the catalog's volume limits (nothing when it has none)."""
        catalog = self._application.core.catalog
        policies = {o.offer_id: o.policy for o in catalog.offers}
        limits = catalog.contact_policy.volume_limits(policies, time.time())
        if not limits:
            self._application.volume = None
            return
        counters = [counter for counter, _ in limits]
        used = await self._application.store.volume_usage(counters)
        self._application.volume = dict(zip(counters, used, strict=True))
        for (counter, most), n in zip(limits, used, strict=True):
            limit = counter.rsplit("|", 1)[0]  # offer:<id>|<period seconds>
            metrics.VOLUME_USED.labels(limit).set(n)
            metrics.VOLUME_MAX.labels(limit).set(most)

    async def run(self, interval: float) -> None:
        while True:
            try:
                await self.check()
            except ArbiterError as exc:  # the store away: the last counters stand
                log.debug("volume counters not read: %s", exc)
            except Exception:
                log.exception("volume counters not read")
            await asyncio.sleep(interval)
