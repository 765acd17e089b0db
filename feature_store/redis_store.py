"""The Redis (or Valkey, or Redis Cluster) implementation of the online store.

Uses only Redis 6.2 commands: hashes, lists, streams, MULTI and Lua. See
docs/redis-keys.md for the layout and feature_store/keys.py for the names.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from engine.errors import FeatureStoreUnavailable, ProfileSchemaMismatch
from feature_store import keys
from feature_store.schema import LAST_CATEGORY_FIELD, FeatureSchema
from feature_store.store import (
    CustomerHistory,
    CustomerRecord,
    EventRecord,
    LoggedDecision,
    OutcomeRecord,
)

DECISIONS_KEPT = 50
OUTCOMES_KEPT = 100
HISTORY_TTL_SECONDS = 90 * 86400
IDEMPOTENCY_TTL_SECONDS = 30 * 86400
LOG_MAXLEN = 1_000_000  # approximate cap of each global stream

# First report of a key: mark it pending and update the customer's own structures; the
# caller then appends to the global outcome log (another slot on a cluster) and stores
# the log id under the key. A report finding "pending" (an earlier attempt died between
# the two steps) appends again: the log is at-least-once, exactly-once by key.
_OUTCOME_SCRIPT = """
local current = redis.call('GET', KEYS[1])
if current and current ~= 'pending' then return current end
if not current then
  redis.call('SET', KEYS[1], 'pending', 'EX', ARGV[1])
  redis.call('LPUSH', KEYS[2], ARGV[2])
  redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]) - 1)
  redis.call('EXPIRE', KEYS[2], ARGV[4])
  redis.call('HINCRBY', KEYS[3], ARGV[5], 1)
  redis.call('EXPIRE', KEYS[3], ARGV[6])
end
return 'pending'
"""


def connect(
    url: str, *, timeout_seconds: float = 0.25, max_connections: int = 64
) -> aioredis.Redis:
    """An asyncio client that fails fast: callers degrade rather than wait on retries.

    The pool blocks (up to the timeout) when all connections are busy, instead of failing
    at once as the default pool does: a burst of calls queues for a connection.
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout_seconds,
        socket_timeout=timeout_seconds,
        socket_connect_timeout=timeout_seconds,
        retry=Retry(NoBackoff(), 1),
        health_check_interval=0,
    )
    return aioredis.Redis.from_pool(pool)  # the client owns the pool: aclose() closes it


def _json(value: Any) -> bytes:
    # orjson: a 100-candidate decision-log entry encodes in ~7 us instead of ~120 us.
    return orjson.dumps(value)


def queue_fetch(pipe: Any, customer_id: str) -> None:
    """Queues the reads of one decision on a (sync or asyncio) pipeline."""
    pipe.hmget(
        keys.customer_key(customer_id, keys.PROFILE),
        [keys.FIELD_VECTOR, keys.FIELD_SCHEMA, keys.FIELD_ATTRIBUTES],
    )
    pipe.hgetall(keys.customer_key(customer_id, keys.REALTIME))


def decode_fetch(schema: FeatureSchema, customer_id: str, replies: list[Any]) -> CustomerRecord:
    """The record from the replies of ``queue_fetch``."""
    (vector, fingerprint, attributes), realtime = replies
    rt = {k.decode(): v.decode() for k, v in realtime.items()}
    if vector is None:
        return CustomerRecord(customer_id, False, schema.decode_batch(None), {}, rt)
    if fingerprint.decode() != schema.fingerprint:
        raise ProfileSchemaMismatch(
            f"profile of {customer_id} was written with schema {fingerprint.decode()}, "
            f"serving schema is {schema.fingerprint}: reload profiles"
        )
    attrs = orjson.loads(attributes) if attributes else {}
    return CustomerRecord(customer_id, True, schema.decode_batch(vector), attrs, rt)


class RedisFeatureStore:
    """FeatureStore and DecisionLog over one Redis client."""

    def __init__(self, client: aioredis.Redis, schema: FeatureSchema) -> None:
        self._redis = client
        self._schema = schema
        self._outcome_script = client.register_script(_OUTCOME_SCRIPT)

    @property
    def client(self) -> aioredis.Redis:
        return self._redis

    async def fetch(self, customer_id: str) -> CustomerRecord:
        pipe = self._redis.pipeline(transaction=False)
        queue_fetch(pipe, customer_id)
        try:
            replies = await pipe.execute()
        except RedisError as exc:
            raise FeatureStoreUnavailable(f"feature store read failed: {exc}") from exc
        return decode_fetch(self._schema, customer_id, replies)

    async def record_event(self, event: EventRecord) -> None:
        rt_key = keys.customer_key(event.customer_id, keys.REALTIME)
        events_key = keys.customer_key(event.customer_id, keys.EVENTS)
        ttl = self._schema.realtime_ttl_seconds
        stamps: dict[str, str] = {
            "ts:last_seen": repr(event.occurred_at),
            f"ts:{event.event_type}": repr(event.occurred_at),
        }
        category = event.attributes.get("category")
        if category:
            stamps[LAST_CATEGORY_FIELD] = category
        record = {
            "channel": event.channel,
            "event_type": event.event_type,
            "attributes": dict(event.attributes),
            "occurred_at": event.occurred_at,
        }
        # MULTI/EXEC on keys sharing one hash tag: atomic on a single node and a cluster.
        pipe = self._redis.pipeline(transaction=True)
        pipe.hincrby(rt_key, f"n:{event.event_type}", 1)
        pipe.hincrby(rt_key, f"c:{event.channel}", 1)
        pipe.hset(rt_key, mapping=stamps)  # type: ignore[arg-type]
        pipe.expire(rt_key, ttl)
        pipe.lpush(events_key, _json(record))
        pipe.ltrim(events_key, 0, self._schema.recent_events - 1)
        pipe.expire(events_key, ttl)
        try:
            await pipe.execute()
        except RedisError as exc:
            raise FeatureStoreUnavailable(f"feature store write failed: {exc}") from exc

    async def history(self, customer_id: str) -> CustomerHistory:
        pipe = self._redis.pipeline(transaction=False)
        pipe.lrange(keys.customer_key(customer_id, keys.EVENTS), 0, -1)
        pipe.lrange(keys.customer_key(customer_id, keys.DECISIONS), 0, -1)
        pipe.lrange(keys.customer_key(customer_id, keys.OUTCOMES), 0, -1)
        try:
            events, decisions, outcomes = await pipe.execute()
        except RedisError as exc:
            raise FeatureStoreUnavailable(f"feature store read failed: {exc}") from exc
        return CustomerHistory(
            events=[orjson.loads(e) for e in events],
            decisions=[orjson.loads(d) for d in decisions],
            outcomes=[orjson.loads(o) for o in outcomes],
        )

    async def append_decisions(self, decisions: Sequence[LoggedDecision]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for d in decisions:
            key = keys.customer_key(d.customer_id, keys.DECISIONS)
            pipe.xadd(keys.DECISION_LOG, {"d": _json(d.entry)}, maxlen=LOG_MAXLEN, approximate=True)
            pipe.lpush(key, _json(d.summary))
            pipe.ltrim(key, 0, DECISIONS_KEPT - 1)
            pipe.expire(key, HISTORY_TTL_SECONDS)
        try:
            await pipe.execute()
        except RedisError as exc:
            raise FeatureStoreUnavailable(f"decision log write failed: {exc}") from exc

    async def record_outcome(self, outcome: OutcomeRecord) -> tuple[bool, str]:
        cid = outcome.customer_id
        idem = keys.idempotency_key(cid, outcome.idempotency_key)
        summary = {
            "decision_id": outcome.decision_id,
            "offer_id": outcome.offer_id,
            "outcome": outcome.outcome,
            "value": outcome.value,
            "occurred_at": outcome.occurred_at,
        }
        try:
            state = await self._outcome_script(
                keys=[
                    idem,
                    keys.customer_key(cid, keys.OUTCOMES),
                    keys.customer_key(cid, keys.REALTIME),
                ],
                args=[
                    IDEMPOTENCY_TTL_SECONDS,
                    _json(summary),
                    OUTCOMES_KEPT,
                    HISTORY_TTL_SECONDS,
                    f"o:{outcome.outcome}",
                    self._schema.realtime_ttl_seconds,
                ],
            )
            if state != b"pending":
                return False, state.decode()
            entry = {**summary, "customer_id": cid, "idempotency_key": outcome.idempotency_key}
            log_id = await self._redis.xadd(
                keys.OUTCOME_LOG, {"o": _json(entry)}, maxlen=LOG_MAXLEN, approximate=True
            )
            await self._redis.set(idem, log_id, xx=True, keepttl=True)
        except RedisError as exc:
            raise FeatureStoreUnavailable(f"outcome log write failed: {exc}") from exc
        return True, log_id.decode() if isinstance(log_id, bytes) else str(log_id)
