"""The hot connection (feature_store/hot_redis.py) on a real Redis: replies matched to
calls with many in flight, scripts reloaded after a flush, a killed connection replaced,
a stalled server a timeout (and a new connection after it), errors as redis-py's; the
calls that find no connection share one connect, bounded by their budgets and backed off
after a failure."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from benchmarks.common import black_hole
from common.errors import FeatureStoreUnavailable
from common.ports import free_port
from engine.settings import Definitions
from feature_store.embedded import EmbeddedCluster, EmbeddedRedis
from feature_store.hot_redis import RECONNECT_MAX, HotCluster, HotRedis, supports
from feature_store.redis_client import connect
from feature_store.redis_store import RedisFeatureStore

ECHO = "return {KEYS[1], ARGV[1]}"


def test_replies_find_their_calls_with_many_in_flight(
    redis_client: redis.Redis, redis_url: str
) -> None:
    sha = redis_client.script_load(ECHO)

    async def main() -> list[Any]:
        hot = HotRedis(redis_url, timeout_seconds=5)
        try:
            return await asyncio.gather(
                *(hot.evalsha(sha, [f"k{i}"], [i * 1.5]) for i in range(200))
            )
        finally:
            await hot.aclose()

    replies = asyncio.run(main())
    assert replies == [[f"k{i}".encode(), repr(i * 1.5).encode()] for i in range(200)]


def test_errors_are_redis_pys(redis_client: redis.Redis, redis_url: str) -> None:
    async def main() -> None:
        hot = HotRedis(redis_url, timeout_seconds=5)
        try:
            with pytest.raises(ResponseError, match="NOSCRIPT"):
                await hot.evalsha("0" * 40, ["k"], [])
            sha = redis_client.script_load("return redis.error_reply('no thanks')")
            with pytest.raises(ResponseError, match="no thanks"):
                await hot.evalsha(sha, ["k"], [])
        finally:
            await hot.aclose()
        closed = HotRedis("redis://127.0.0.1:1", timeout_seconds=1)  # nothing listens
        with pytest.raises(RedisConnectionError):
            await closed.evalsha("0" * 40, ["k"], [])

    asyncio.run(main())
    assert supports("redis://h:1/0") and supports("unix:///tmp/r.sock")
    assert not supports("rediss://h:1/0")


def _on_hot_store(
    url: str,
    definitions: Definitions,
    timeout: float,
    work: Callable[[RedisFeatureStore], Awaitable[None]],
) -> None:
    """``work(store)`` on a store whose decision path takes a hot connection."""

    async def main() -> None:
        hot = HotRedis(url, timeout_seconds=timeout)
        store = RedisFeatureStore(connect(url), definitions.schema, hot=hot)
        try:
            await work(store)
        finally:
            await store.aclose()

    asyncio.run(main())


def test_the_store_survives_a_script_flush_and_a_killed_connection(
    loaded: redis.Redis, redis_url: str, definitions: Definitions
) -> None:
    async def work(store: RedisFeatureStore) -> None:
        assert (await store.fetch("cust-000001")).known
        loaded.script_flush()  # as a restarted server: every script gone
        assert (await store.fetch("cust-000002")).known
        killed = loaded.client_kill_filter(_type="normal", skipme=True)
        assert killed >= 1
        await asyncio.sleep(0.05)  # the loss is seen: the next call takes a new one
        assert (await store.fetch("cust-000003")).known

    _on_hot_store(redis_url, definitions, 5, work)


def test_a_stalled_server_is_a_timeout_and_the_connection_is_replaced(
    loaded: redis.Redis, redis_url: str, definitions: Definitions
) -> None:
    async def work(store: RedisFeatureStore) -> None:
        assert (await store.fetch("cust-000001")).known
        stall = threading.Thread(target=lambda: loaded.execute_command("DEBUG", "SLEEP", 0.4))  # type: ignore[no-untyped-call]
        stall.start()
        await asyncio.sleep(0.05)
        with pytest.raises(FeatureStoreUnavailable) as caught:
            await store.fetch("cust-000002")
        assert caught.value.timed_out
        await asyncio.to_thread(stall.join)
        assert (await store.fetch("cust-000002")).known

    _on_hot_store(redis_url, definitions, 0.1, work)


def test_a_cluster_call_follows_moved_and_ask(
    cluster: EmbeddedCluster, cluster_client: redis.RedisCluster
) -> None:
    """Routed by slot: a stale slot table is corrected by MOVED, a slot being migrated
    is followed by ASK (ASKING on the target's connection, the table left as it is)."""
    sha = cluster_client.script_load(ECHO)  # on every primary
    key = "arb:{ask-me}:x"
    slot = key_slot(key.encode())
    source = cluster_client.get_node_from_key(key)  # type: ignore[no-untyped-call]
    target = next(n for n in cluster_client.get_primaries() if n.name != source.name)  # type: ignore[no-untyped-call]
    source_id, target_id = (
        n.redis_connection.execute_command("CLUSTER MYID") for n in (source, target)
    )

    async def main() -> None:
        hot = HotCluster(cluster.url, timeout_seconds=5)
        try:
            await hot.evalsha(sha, ["arb:{warm}:x"], [0])  # the layout learnt
            right = list(hot._slots)
            first = right[0]
            hot._slots = [first] * len(right)  # every slot on one node: stale
            names = [f"arb:{{c{i}}}:x" for i in range(30)]
            replies = await asyncio.gather(
                *(hot.evalsha(sha, [k], [i]) for i, k in enumerate(names))
            )
            assert replies == [[k.encode(), str(i).encode()] for i, k in enumerate(names)]
            moved = {key_slot(k.encode()) for k in names} - {
                s for s, a in enumerate(right) if a == first
            }
            assert moved and all(hot._slots[s] == right[s] for s in moved)

            # the slot on its way from source to target: source answers ASK for a key it
            # does not hold
            target.redis_connection.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", source_id)
            source.redis_connection.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", target_id)
            asked = target.redis_connection.info("commandstats").get("cmdstat_asking", {})
            assert await hot.evalsha(sha, [key], ["asked"]) == [key.encode(), b"asked"]
            after = target.redis_connection.info("commandstats")["cmdstat_asking"]
            assert after["calls"] == asked.get("calls", 0) + 1
            assert hot._slots[slot] == (source.host, source.port)  # ASK moves nothing
        finally:
            for node in (source, target):
                node.redis_connection.execute_command("CLUSTER SETSLOT", slot, "STABLE")
            await hot.aclose()

    asyncio.run(main())


class _Doorman:
    """A listener that counts the connections it is asked for and closes each at once,
    before any reply: a Redis whose every connect fails (our AUTH goes unanswered)."""

    def __init__(self) -> None:
        self.accepted = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> _Doorman:
        async def turn_away(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.accepted += 1
            writer.close()

        self._server = await asyncio.start_server(turn_away, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()


async def _outcome(call: Awaitable[Any], budget: float) -> str:
    """What became of ``call`` within ``budget`` seconds, by kind."""
    try:
        async with asyncio.timeout(budget):
            await call
    except TimeoutError:  # the budget (asyncio's) or the client's own (redis-py's)
        return "timeout"
    except RedisConnectionError:
        return "refused"
    except RedisTimeoutError:
        return "timeout"
    except ResponseError:  # the server answered (NOSCRIPT after a restart)
        return "answered"
    return "ok"


def test_calls_that_find_no_connection_share_one_connect_and_back_off() -> None:
    async def main() -> None:
        async with _Doorman() as redis_like:
            hot = HotRedis(f"redis://:secret@127.0.0.1:{redis_like.port}", timeout_seconds=1)
            try:
                # 50 calls at once: one connect between them, its failure theirs
                outcomes = await asyncio.gather(
                    *(_outcome(hot.evalsha("0" * 40, [f"k{i}"], []), 1) for i in range(50))
                )
                assert outcomes == ["refused"] * 50 and redis_like.accepted == 1
                # at once again: the hold-off answers, without connecting
                started = time.perf_counter()
                assert await _outcome(hot.evalsha("0" * 40, ["k"], []), 1) == "refused"
                assert time.perf_counter() - started < 0.005 and redis_like.accepted == 1
                # calls every millisecond for 0.6 s: the attempts back off, doubling
                # with jitter up to RECONNECT_MAX: about 8 of them, not 600
                for _ in range(600):
                    await _outcome(hot.evalsha("0" * 40, ["k"], []), 1)
                    await asyncio.sleep(0.001)
                assert 4 <= redis_like.accepted <= 12, redis_like.accepted
            finally:
                await hot.aclose()

    asyncio.run(main())


def test_a_connect_that_hangs_ends_with_its_callers_budgets() -> None:
    """A host gone from the network (no SYN answered): the connect is abandoned, its
    socket closed, once no caller waits for it; the next caller fails at once."""
    port = free_port()
    hole = black_hole(port)

    def sockets() -> int:
        return sum(1 for fd in os.listdir("/proc/self/fd") if "socket" in _link(fd))

    async def main() -> None:
        hot = HotRedis(f"redis://127.0.0.1:{port}", timeout_seconds=5)  # its own bound: far
        try:
            before = sockets()
            started = time.perf_counter()
            outcomes = await asyncio.gather(
                *(_outcome(hot.evalsha("0" * 40, ["k"], []), 0.03) for _ in range(20))
            )
            assert outcomes == ["timeout"] * 20
            assert time.perf_counter() - started < 0.1  # the budgets, not the 5 s
            started = time.perf_counter()
            assert await _outcome(hot.evalsha("0" * 40, ["k"], []), 0.03) == "timeout"
            assert time.perf_counter() - started < 0.003  # the hold-off: no wait
            assert sockets() == before  # the connect did not outlive its callers
        finally:
            await hot.aclose()

    try:
        asyncio.run(main())
    finally:
        for s in hole:
            s.close()


def _link(fd: str) -> str:
    with contextlib.suppress(OSError):
        return os.readlink(f"/proc/self/fd/{fd}")
    return ""


def test_a_restarted_redis_is_connected_again_within_the_longest_hold_off() -> None:
    own = EmbeddedRedis().start()
    sha = redis.Redis.from_url(own.url).script_load(ECHO)

    async def main() -> float:
        hot = HotRedis(own.url, timeout_seconds=1)
        try:
            assert await _outcome(hot.evalsha(sha, ["k"], ["v"]), 1) == "ok"
            own.kill()
            for _ in range(300):  # 0.3 s of failed calls: the hold-off at its longest
                assert await _outcome(hot.evalsha(sha, ["k"], ["v"]), 1) == "refused"
                await asyncio.sleep(0.001)
            await asyncio.to_thread(own.start)
            back = time.perf_counter()
            while await _outcome(hot.evalsha(sha, ["k"], ["v"]), 1) != "answered":
                await asyncio.sleep(0.001)
            return time.perf_counter() - back
        finally:
            await hot.aclose()

    try:
        assert asyncio.run(main()) <= RECONNECT_MAX + 0.05
    finally:
        own.stop()
