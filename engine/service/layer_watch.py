"""Every replica picks up the online layer (engine/core/adaptive.py) within a second of
its publication: a task reads the layer's version from Redis every ``interval`` and, when
it changed, the layer, and gives each core serving now its view of it (no Redis call per
decision). It also publishes the evidence of the models it serves (what each learnt of
each offer), from which the learner starts a model's posteriors.

The learner down: the last posteriors keep serving, ``arbiter_adaptive_learner_up`` says
0 once nothing was published for ``LEARNER_DOWN_SECONDS``, and a learner back (this
replica's restarted, or another's) is picked up by the same task.
"""

from __future__ import annotations

import asyncio
import logging
import time

import orjson
from redis.asyncio import Redis, RedisCluster

from engine.core import adaptive
from engine.core.decision import DecisionCore
from engine.service import metrics
from engine.service.application import Application
from engine.service.learner import Published, as_bytes
from feature_store import keys
from feature_store.redis_client import REDIS_ERRORS

log = logging.getLogger(__name__)
LEARNER_DOWN_SECONDS = 30.0


def evidence_json(core: DecisionCore) -> bytes:
    """What the learner needs of a model: its evidence per offer, its context features."""
    return orjson.dumps(
        {
            "offers": {o: [e.rows, e.positives] for o, e in core.scorer.evidence.items()},
            "context": core.layer_context().to_json(),
        }
    )


class LayerWatch:
    def __init__(self, application: Application, client: Redis | RedisCluster) -> None:
        self._application = application
        self._client = client
        self._published: set[str] = set()  # models whose evidence this replica published
        self.version = 0
        self.updated = 0.0

    def cores(self) -> list[DecisionCore]:
        challenger = self._application.challenger
        return [self._application.core] + ([challenger[0]] if challenger else [])

    async def check(self) -> bool:
        """Reads the layer when its version changed; True when a new one serves."""
        for core in self.cores():
            version = core.scorer.version
            if version not in self._published:
                await self._client.hsetnx(keys.LAYER_EVIDENCE, version, evidence_json(core))
                self._published.add(version)
        raw = await self._client.hget(keys.LAYER, keys.LAYER_VERSION)
        changed = raw is not None and int(raw) != self.version
        if changed:
            doc = await self._client.hget(keys.LAYER, keys.LAYER_DOC)
            if doc is not None:
                self.serve(Published.from_json(as_bytes(doc)).layer)
        age = time.time() - self.updated if self.updated else float("inf")
        metrics.LAYER_AGE.set(age if self.updated else float("nan"))
        metrics.LEARNER_UP.set(1 if age < LEARNER_DOWN_SECONDS else 0)
        return changed

    def serve(self, layer: adaptive.Layer) -> None:
        """``layer`` serves from now on, in every core (and in the cores a reload builds)."""
        self._application.layer = layer
        for core in self.cores():
            core.adaptive = core.layer_view(layer)
        self.version, self.updated = layer.version, layer.updated
        metrics.LAYER_VERSION.set(layer.version)

    async def run(self, interval: float) -> None:
        while True:
            try:
                await self.check()
            except REDIS_ERRORS as exc:  # Redis away: keep the layer serving now
                log.debug("online layer not read: %r", exc)
                metrics.LEARNER_UP.set(0)
            except Exception:
                log.exception("online layer not read")
            await asyncio.sleep(interval)
