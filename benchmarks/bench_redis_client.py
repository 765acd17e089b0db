"""The hot path's Redis read through the hot connection (feature_store/hot_redis.py, what
serves on one server), redis-py's asyncio client (what serves on a cluster) and its sync
client on a thread pool (`asyncio.to_thread`), from one event loop, alone and with 16
reads in flight: latency per read and reads a second, interleaved rounds, one run; and
Redis's own time per READ (INFO commandstats), the floor.

    .venv/bin/python -m benchmarks.bench_redis_client
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from urllib.parse import urlsplit

import numpy as np
import redis

from benchmarks.common import benchmark_redis
from engine.settings import ServerSettings, load_definitions
from feature_store import keys, scripts
from feature_store.hot_redis import HotRedis
from feature_store.loader import load_profiles
from feature_store.redis_client import connect
from feature_store.redis_store import READ_KEYS
from training.world import generate

CUSTOMERS = 5000


def _args(i: int) -> tuple[list[str], list[float]]:
    now = time.time()
    cid = f"cust-{1 + i % CUSTOMERS:06d}"
    return [keys.customer_key(cid, k) for k in READ_KEYS], [now, now - 30 * 86400]


async def _run(
    read: Callable[[int], Awaitable[object]], calls: int, inflight: int
) -> tuple[float, float]:
    """p50 latency (us) and reads a second with ``inflight`` reads at a time."""
    took: list[float] = []
    counter = iter(range(calls))

    async def worker() -> None:
        for i in counter:
            started = time.perf_counter()
            await read(i)
            took.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(inflight)))
    return float(np.median(took) * 1e6), calls / (time.perf_counter() - started)


async def _peers(
    url: str, sha: str, stack: AsyncExitStack
) -> list[tuple[str, Callable[[int], Awaitable[object]]]]:
    """coredis and valkey-glide, when installed (not dependencies: `pip install coredis
    valkey-glide` to compare)."""
    out: list[tuple[str, Callable[[int], Awaitable[object]]]] = []
    try:
        import coredis  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        print("  (coredis not installed: left out)")
    else:
        core = await stack.enter_async_context(coredis.Redis.from_url(url))  # its pool's life

        async def via_coredis(i: int) -> object:
            k, a = _args(i)
            return await core.evalsha(sha, keys=k, args=a)

        out.append(("coredis", via_coredis))
    try:
        import glide  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        print("  (valkey-glide not installed: left out)")
    else:
        parts = urlsplit(url)
        config = glide.GlideClientConfiguration(
            [glide.NodeAddress(parts.hostname or "127.0.0.1", parts.port or 6379)],
            database_id=int(parts.path.lstrip("/") or 0),
            request_timeout=250,
        )
        valkey = await glide.GlideClient.create(config)

        async def via_glide(i: int) -> object:
            k, a = _args(i)
            return await valkey.custom_command(["EVALSHA", sha, str(len(k)), *k, *map(str, a)])

        out.append(("valkey-glide", via_glide))
    return out


async def main_async(url: str, *, threads: bool = True, peers: bool = True) -> None:
    async with AsyncExitStack() as stack:
        await _compare(url, stack, threads=threads, peers=peers)


async def _compare(url: str, stack: AsyncExitStack, *, threads: bool, peers: bool) -> None:
    aclient = connect(url)
    ascript = aclient.register_script(scripts.READ)
    sclient = redis.Redis.from_url(url, socket_timeout=0.25)
    sscript = sclient.register_script(scripts.READ)
    pool = ThreadPoolExecutor(max_workers=16)
    loop = asyncio.get_running_loop()
    hot = HotRedis(url)
    await ascript(keys=_args(0)[0], args=_args(0)[1])  # loaded

    async def via_hot(i: int) -> object:
        k, a = _args(i)
        return await hot.evalsha(ascript.sha, k, a)

    async def via_asyncio(i: int) -> object:
        k, a = _args(i)
        return await ascript(keys=k, args=a)

    async def via_threads(i: int) -> object:
        k, a = _args(i)
        return await loop.run_in_executor(pool, lambda: sscript(keys=k, args=a))

    clients: list[tuple[str, Callable[[int], Awaitable[object]]]] = [
        ("hot connection", via_hot),
        ("redis-py asyncio", via_asyncio),
    ]
    if threads:
        clients.append(("redis-py sync, threads", via_threads))
    if peers:
        clients += await _peers(url, ascript.sha, stack)
    results: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for _ in range(3):
        for inflight in (1, 16):
            for name, read in clients:
                results.setdefault((name, inflight), []).append(await _run(read, 3000, inflight))
    print(f"READ script on {type(loop).__module__}'s loop, medians of 3 interleaved rounds:")
    for (name, inflight), runs in results.items():
        p50 = np.median([r[0] for r in runs])
        rate = np.median([r[1] for r in runs])
        print(f"  {name:22s} {inflight:2d} in flight: p50 {p50:6.0f} us, {rate:7.0f} reads/s")
    stats = sclient.info("commandstats").get("cmdstat_evalsha", {})
    print(f"  Redis's own time per EVALSHA (all calls): {stats.get('usec_per_call', 0):.0f} us")
    await hot.aclose()
    await aclient.aclose()
    sclient.close()
    pool.shutdown()


def main() -> None:
    with benchmark_redis() as url:
        client = redis.Redis.from_url(url)
        client.flushdb()
        schema = load_definitions(ServerSettings()).schema
        load_profiles(client, schema, generate(CUSTOMERS, seed=7).profiles())
        client.close()
        asyncio.run(main_async(url))
        try:  # redis-py on uvloop (not a dependency: `pip install uvloop` to compare)
            import uvloop  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            print("(uvloop not installed: left out)")
        else:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(main_async(url, threads=False, peers=False))


if __name__ == "__main__":
    main()
