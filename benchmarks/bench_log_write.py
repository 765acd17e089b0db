"""What the decision log's dedupe costs Redis: the appender's batch (each entry through
``scripts.APPEND_DECISIONS``) against the plain pipeline it replaced (XADD, LPUSH, LTRIM,
EXPIRE), as Redis's own time per logged decision (INFO commandstats), 100 batches of 64,
interleaved twice. Uses ``REDIS_URL`` (its database is FLUSHED) or an embedded Redis.

    .venv/bin/python -m benchmarks.bench_log_write
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

import redis
import redis.asyncio as aioredis

from benchmarks.common import benchmark_redis
from feature_store import keys, log_codec
from feature_store.log_append import HISTORY_TTL_SECONDS, LogAppender
from feature_store.store import DECISIONS_KEPT, LoggedDecision, encoded

ENTRY = {
    "customer_id": "c",
    "features": list(range(45)),
    "candidates": [["fibre_broadband", 0.1]] * 20,
    "actions": [{"offer_id": "fibre_broadband", "probability": 1.0}],
}


def batch(first: int) -> list[LoggedDecision]:
    return [
        LoggedDecision(
            f"cust-{i % 500:06d}",
            {**ENTRY, "decision_id": f"d{first + i}", "ts": time.time()},
            {"decision_id": f"d{first + i}", "ts": time.time()},
        )
        for i in range(64)
    ]


async def plain(client: aioredis.Redis, decisions: Sequence[LoggedDecision]) -> None:
    pipe = client.pipeline(transaction=False)
    for d in decisions:
        ((field, blob),) = log_codec.encode_decision(d.entry).items()
        stream = keys.decision_log(keys.log_shard(d.customer_id))
        pipe.execute_command("XADD", stream, "MAXLEN", "~", 62_500, "*", field, blob)
        history = keys.customer_key(d.customer_id, keys.DECISIONS)
        pipe.execute_command("LPUSH", history, encoded(d.summary))
        pipe.execute_command("LTRIM", history, 0, DECISIONS_KEPT - 1)
        pipe.execute_command("EXPIRE", history, HISTORY_TTL_SECONDS)
    await pipe.execute()


async def main(url: str) -> None:
    sync = redis.Redis.from_url(url)
    client = aioredis.from_url(url)
    appender = LogAppender(client)
    ways: dict[str, Callable[[Sequence[LoggedDecision]], Awaitable[None]]] = {
        "plain pipeline (before)": lambda b: plain(client, b),
        "appender, each id once": appender.append_decisions,
    }
    for _ in range(2):
        for name, append in ways.items():
            sync.flushdb()
            sync.config_resetstat()
            for r in range(100):
                await append(batch(r * 64))
            spent = sum(v["usec"] for v in sync.info("commandstats").values())
            print(f"{name:26s} {spent / 6400:5.1f} us of Redis time a logged decision")
    await client.aclose()


if __name__ == "__main__":
    with benchmark_redis() as url:
        asyncio.run(main(url))
