"""Always-on outbound runs in Redis: who goes over the customer base for a run, where that
pass is, and what its messages came to (keys.run_keys).

A pass reads the base in pages of SCAN (one cursor per primary of a cluster); after each
page it writes where it is and its counts in one script that first checks it still holds
the run's lease, so a pass that lost its lease (a pause longer than the lease) stops
writing, and whoever takes the lease next goes on from the last page written. A page done
again after a crash schedules nobody twice: a customer's trigger waits once
(feature_store/triggers.py's SCHEDULE).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from redis.asyncio import RedisCluster

from feature_store import keys
from feature_store.redis_client import AsyncClient, translated

# 1 when ARGV[1] holds the lease (KEYS[1]) and the pass (KEYS[2]) moved on: cursor ARGV[2],
# finished at ARGV[3] unless "", the lease renewed for ARGV[4] ms, the pass kept ARGV[5]
# seconds, the counts (field, increment) pairs ARGV[6]...; 0 when the lease is another's.
ADVANCE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], 'cursor', ARGV[2])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[2], 'finished', ARGV[3]) end
for i = 6, #ARGV, 2 do redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1]) end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[5])
return 1
"""
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# Where a pass is: SCAN's cursor per node ("" for one server); None when it has not begun.
Cursor = dict[str, int]
# What a pass writes (a pass made again starts them afresh; what its messages came to,
# "sent" and "suppressed:<reason>", stays)
PASS_FIELDS = (
    "cursor", "started", "finished", "scanned", "scheduled", "already_pending",
    "not_reeligible", "not_in_segment", "unreadable",
)  # fmt: skip


def cursor_of(state: Mapping[str, str]) -> Cursor | None:
    """Where a pass read back by ``RunStore.state`` is (None: not begun)."""
    raw = state.get("cursor")
    return {str(k): int(v) for k, v in json.loads(raw).items()} if raw else None


class RunStore:
    def __init__(self, client: AsyncClient) -> None:
        self._redis = client
        self._advance = client.register_script(ADVANCE)
        self._release = client.register_script(RELEASE)

    async def state(self, run_id: str, cycle: str) -> dict[str, str]:
        """The cycle's pass and counts (empty when it has not begun)."""
        _, progress = keys.run_keys(run_id, cycle)
        with translated("outbound run read", quiet=True):
            raw = await self._redis.hgetall(progress)
        return {_text(k): _text(v) for k, v in raw.items()}

    async def take(self, run_id: str, cycle: str, owner: str, seconds: float, now: float) -> bool:
        """Takes the run's lease for ``seconds``; notes when the cycle's pass started."""
        lease, progress = keys.run_keys(run_id, cycle)
        with translated("outbound run lease", quiet=True):
            taken = await self._redis.set(lease, owner, nx=True, px=int(seconds * 1000))
            if taken:
                await self._redis.hsetnx(progress, "started", f"{now:.3f}")
                await self._redis.expire(progress, keys.RUN_KEPT_SECONDS)
        return bool(taken)

    async def advance(
        self,
        run_id: str,
        cycle: str,
        owner: str,
        cursor: Cursor,
        counts: Mapping[str, int],
        *,
        seconds: float,
        finished: float | None,
    ) -> bool:
        """Writes where the pass is and adds ``counts``, while ``owner`` holds the lease
        (renewed for ``seconds``); False when it does not."""
        args: list[str | int] = [
            owner,
            json.dumps(cursor),
            "" if finished is None else f"{finished:.3f}",
            int(seconds * 1000),
            keys.RUN_KEPT_SECONDS,
        ]
        for field, n in counts.items():
            if n:
                args += [field, n]
        with translated("outbound run progress"):
            done = await self._advance(keys=list(keys.run_keys(run_id, cycle)), args=args)
        return bool(done)

    async def release(self, run_id: str, owner: str) -> None:
        lease, _ = keys.run_keys(run_id, "")
        with translated("outbound run lease", quiet=True):
            await self._release(keys=[lease], args=[owner])

    async def count(self, run_id: str, cycle: str, field: str) -> None:
        """One more of ``field`` (a message sent, or suppressed by a reason) for the cycle."""
        _, progress = keys.run_keys(run_id, cycle)
        with translated("outbound run count"):
            await self._redis.hincrby(progress, field, 1)

    async def again(self, run_id: str, cycle: str) -> None:
        """The cycle's pass is made again, from the start (customers loaded since, a changed
        segment; those waiting already are not scheduled twice)."""
        _, progress = keys.run_keys(run_id, cycle)
        with translated("outbound run reset"):
            await self._redis.hdel(progress, *PASS_FIELDS)

    async def customers(self, cursor: Cursor | None, count: int) -> tuple[list[str], Cursor]:
        """About ``count`` more customers of the base (loaded profiles) from ``cursor``,
        and where that leaves the pass ({} when it is over)."""
        client = self._redis
        with translated("customer base scan"):
            if isinstance(client, RedisCluster):
                names = {node.name for node in client.get_primaries()}
                if cursor is None or not set(cursor) <= names:  # begun, or the nodes changed
                    cursor = dict.fromkeys(names, 0)
                name = min(cursor)
                # a cluster client's SCAN answers {node: cursor}, one server's the cursor
                done, found = await client.scan(
                    cursor=cursor[name],
                    match=keys.PROFILES,
                    count=count,
                    target_nodes=client.get_node(node_name=name),
                )
                after = done[name]  # type: ignore[index]
            else:
                cursor = cursor or {"": 0}
                name = ""
                after, found = await client.scan(
                    cursor=cursor[name], match=keys.PROFILES, count=count
                )
        left = {k: v for k, v in cursor.items() if k != name}
        if after:
            left[name] = int(after)
        return [keys.profile_customer(_text(k)) for k in found], left


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
