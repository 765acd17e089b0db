"""The hot connection (feature_store/hot_redis.py) on a real Redis: replies matched to
calls with many in flight, scripts reloaded after a flush, a killed connection replaced,
a stalled server a timeout (and a new connection after it), errors as redis-py's."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from common.errors import FeatureStoreUnavailable
from engine.settings import Definitions
from feature_store.embedded import EmbeddedCluster
from feature_store.hot_redis import HotCluster, HotRedis, supports
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
