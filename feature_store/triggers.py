"""Pending event triggers in Redis, and the delivery streams their messages go to.

Keys (feature_store/keys.py): a customer's pending triggers are in one of TRIGGER_BUCKETS
buckets, each bucket's keys under one hash tag, so every script below runs atomically on
one node of a cluster too. A trigger is fired exactly once, whatever crashes:

1. ``claim``: due members of a bucket are taken for ``lease`` seconds (their score moves
   to the lease's end), so another scheduler takes them only if this one dies;
2. the scheduler decides (engine/service/trigger_scheduler.py), unless ``sent`` says a
   message of this scheduling is already on the stream (a scheduler that died after
   publishing);
3. ``publish``: the message goes on its channel's stream once per id (a marker under the
   stream's tag, set in the same script);
4. ``complete``: the pending entry and its due member go, the firing is noted for
   re-eligibility. Done twice, nothing changes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Mapping, Sequence

from redis import exceptions as redis_exceptions

from engine.core.triggers import Pending
from feature_store import keys
from feature_store.redis_client import AsyncClient, translated

# Scheduled: 1; one of this trigger already waits for the customer: 0; fired within its
# re-eligibility window (ARGV[4] seconds before ARGV[2]): -1.
SCHEDULE = """
local member, now = ARGV[1], tonumber(ARGV[2])
if redis.call('HEXISTS', KEYS[2], member) == 1 then return 0 end
local last = redis.call('ZSCORE', KEYS[3], member)
if last and tonumber(last) + tonumber(ARGV[4]) > now then return -1 end
redis.call('HSET', KEYS[2], member, ARGV[5])
redis.call('ZADD', KEYS[1], ARGV[3], member)
return 1
"""
# Members ARGV...: those that were pending, now removed.
CANCEL = """
local removed = {}
for _, member in ipairs(ARGV) do
  if redis.call('HDEL', KEYS[2], member) == 1 then removed[#removed + 1] = member end
  redis.call('ZREM', KEYS[1], member)
end
return removed
"""
# {entries due by ARGV[1], taken until ARGV[2]; at most ARGV[3]}, {for each, 1 when it was
# claimed before (its score a lapsed lease, not its due time), else 0}, then the next due
# score left ("" when none). A due member without an entry (cancelled) is dropped.
CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3], 'WITHSCORES')
local out, again = {}, {}
for i = 1, #due, 2 do
  local member = due[i]
  local entry = redis.call('HGET', KEYS[2], member)
  if entry then
    redis.call('ZADD', KEYS[1], ARGV[2], member)
    out[#out + 1] = entry
    again[#again + 1] = (tonumber(due[i + 1]) ~= tonumber(cjson.decode(entry).due)) and 1 or 0
  else
    redis.call('ZREM', KEYS[1], member)
  end
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {out, again, first[2] or ''}
"""
# The entry of this scheduling (id ARGV[2]) replaced by ARGV[4], due at ARGV[3]: 1; 0 when
# it is no longer pending (cancelled, or fired by another).
DEFER = """
local entry = redis.call('HGET', KEYS[2], ARGV[1])
if not entry or cjson.decode(entry).id ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
"""
# This scheduling (id ARGV[2]) no longer pending; with ARGV[4] = 1 it fired at ARGV[3]
# (pruning firings older than ARGV[5] seconds).
COMPLETE = """
local entry = redis.call('HGET', KEYS[2], ARGV[1])
if entry and cjson.decode(entry).id == ARGV[2] then
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[1], ARGV[1])
end
if ARGV[4] == '1' then
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', tonumber(ARGV[3]) - tonumber(ARGV[5]))
end
return 1
"""
# The message (field/value pairs ARGV[3]...) added to the stream once per marker: its
# entry id, or the id it was added under before.
PUBLISH = """
local before = redis.call('GET', KEYS[2])
if before then return before end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
redis.call('SET', KEYS[2], id, 'EX', ARGV[1])
return id
"""
SCHEDULED, ALREADY_PENDING, NOT_REELIGIBLE = "scheduled", "already_pending", "not_reeligible"
_SCHEDULE_RESULT = {1: SCHEDULED, 0: ALREADY_PENDING, -1: NOT_REELIGIBLE}
STREAM_MAX_LENGTH = 1_000_000  # per channel (approximate trimming)


class TriggerQueue:
    def __init__(self, client: AsyncClient, *, stream_max_length: int = STREAM_MAX_LENGTH) -> None:
        self._redis = client
        self._schedule = client.register_script(SCHEDULE)
        self._cancel = client.register_script(CANCEL)
        self._claim = client.register_script(CLAIM)
        self._defer = client.register_script(DEFER)
        self._complete = client.register_script(COMPLETE)
        self._publish = client.register_script(PUBLISH)
        self._stream_max_length = stream_max_length

    @staticmethod
    def _keys(customer_id: str) -> list[str]:
        return list(keys.trigger_keys(keys.trigger_bucket(customer_id)))

    async def schedule(
        self, pending: Pending, reeligible_seconds: float, *, against: float | None = None
    ) -> str:
        """SCHEDULED, ALREADY_PENDING or NOT_REELIGIBLE: re-eligible when the last firing
        was ``reeligible_seconds`` before ``against`` (when it is scheduled, unless said:
        an outbound run says when it is due)."""
        with translated("trigger scheduling"):
            result = await self._schedule(
                keys=self._keys(pending.customer_id),
                args=[
                    keys.trigger_member(pending.customer_id, pending.trigger_id),
                    pending.scheduled_at if against is None else against,
                    pending.due,
                    reeligible_seconds,
                    pending.to_json(),
                ],
            )
        return _SCHEDULE_RESULT[int(result)]

    async def cancel(self, customer_id: str, trigger_ids: Sequence[str]) -> list[str]:
        """Cancels the customer's pending ``trigger_ids``: those that were pending."""
        if not trigger_ids:
            return []
        members = [keys.trigger_member(customer_id, t) for t in trigger_ids]
        with translated("trigger cancelling"):
            removed = await self._cancel(keys=self._keys(customer_id)[:2], args=members)
        return [(m.decode() if isinstance(m, bytes) else m).split("|", 1)[1] for m in removed]

    async def claim(
        self, bucket: int, now: float, lease_seconds: float, limit: int
    ) -> tuple[list[tuple[Pending, bool]], float]:
        """Up to ``limit`` of ``bucket``'s triggers due by ``now``, each taken for
        ``lease_seconds``, with whether it was claimed before (by a scheduler that may have
        died after publishing it); and when the next one left in the bucket is due (inf:
        none)."""
        due, pending, _ = keys.trigger_keys(bucket)
        with translated("trigger claim", quiet=True):
            entries, again, first = await self._claim(
                keys=[due, pending], args=[repr(now), repr(now + lease_seconds), limit]
            )
        claimed = [(Pending.from_json(e), bool(a)) for e, a in zip(entries, again, strict=True)]
        return claimed, float(first) if first else math.inf

    async def defer(self, pending: Pending, due: float) -> bool:
        """Moves the pending trigger to ``due``; False when it is no longer pending."""
        moved = dataclasses.replace(pending, due=due)
        member = keys.trigger_member(pending.customer_id, pending.trigger_id)
        with translated("trigger deferral"):
            done = await self._defer(
                keys=self._keys(pending.customer_id)[:2],
                args=[member, pending.schedule_id, due, moved.to_json()],
            )
        return bool(done)

    async def complete(self, pending: Pending, now: float, *, fired: bool) -> None:
        member = keys.trigger_member(pending.customer_id, pending.trigger_id)
        with translated("trigger completion"):
            await self._complete(
                keys=self._keys(pending.customer_id),
                args=[
                    member,
                    pending.schedule_id,
                    now,
                    int(fired),
                    keys.TRIGGER_FIRED_KEPT_SECONDS,
                ],
            )

    async def sent(self, channels: Sequence[str], message_id: str) -> bool:
        """Whether a message of this id is on any of ``channels``' streams already."""
        with translated("outbound stream read"):
            found = await asyncio.gather(
                *(self._redis.exists(keys.outbound_sent(c, message_id)) for c in channels)
            )
        return any(found)

    async def publish(self, channel: str, message_id: str, fields: Mapping[str, str]) -> str:
        """Adds the message to ``channel``'s stream once per ``message_id``; its entry id."""
        args: list[str | int | float] = [keys.OUTBOUND_SENT_TTL_SECONDS, self._stream_max_length]
        for name, value in fields.items():
            args += [name, value]
        with translated("outbound stream write"):
            entry = await self._publish(
                keys=[keys.outbound_stream(channel), keys.outbound_sent(channel, message_id)],
                args=args,
            )
        return entry.decode() if isinstance(entry, bytes) else str(entry)

    async def pending_for(self, customer_id: str, trigger_ids: Sequence[str]) -> list[Pending]:
        """The customer's pending triggers among ``trigger_ids``, soonest first."""
        if not trigger_ids:
            return []
        _, pending, _ = self._keys(customer_id)
        members = [keys.trigger_member(customer_id, t) for t in trigger_ids]
        with translated("trigger read"):
            entries = await self._redis.hmget(pending, members)
        found = [Pending.from_json(e) for e in entries if e]
        return sorted(found, key=lambda p: p.due)

    async def forget(self, customer_id: str, trigger_ids: Sequence[str]) -> None:
        """Removes what is kept of the customer's triggers (pending and fired)."""
        if not trigger_ids:
            return
        due, pending, fired = self._keys(customer_id)
        members = [keys.trigger_member(customer_id, t) for t in trigger_ids]
        with translated("trigger forgetting"):
            await self._cancel(keys=[due, pending], args=members)
            await self._redis.zrem(fired, *members)

    async def paused(self) -> frozenset[str]:
        """What is paused: "trigger:<id>" and "channel:<name>"."""
        with translated("trigger pauses read", quiet=True):
            names = await self._redis.hkeys(keys.TRIGGER_PAUSED)
        return frozenset(n.decode() if isinstance(n, bytes) else str(n) for n in names)

    async def readers(self, channel: str) -> list[tuple[str, int, int | None]]:
        """The consumer groups reading ``channel``'s stream: (name, messages handed out and
        not acknowledged, messages not yet read: None where Redis does not tell, before 7)."""
        with translated("outbound stream read", quiet=True):
            try:
                groups = await self._redis.xinfo_groups(keys.outbound_stream(channel))
            except redis_exceptions.ResponseError:  # no stream yet
                return []
        out = []
        for group in groups:
            info = {(k.decode() if isinstance(k, bytes) else k): v for k, v in group.items()}
            name = info.get("name", "")
            lag = info.get("lag")
            out.append(
                (
                    name.decode() if isinstance(name, bytes) else str(name),
                    int(info.get("pending", 0)),
                    None if lag is None else int(lag),
                )
            )
        return out

    async def waiting(self) -> int:
        """Pending triggers over every bucket (the metric)."""
        with translated("trigger count", quiet=True):
            counts = await asyncio.gather(
                *(self._redis.hlen(keys.trigger_keys(b)[1]) for b in range(keys.TRIGGER_BUCKETS))
            )
        return int(sum(counts))
