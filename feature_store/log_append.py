"""The decision log's writes to Redis: one pipeline a batch, each decision an XADD to its
customer's shard of the log and its summary at the head of the customer's list. Used by
the store (in-process writer, tests) and by the log process (engine/service/log_process.py),
which imports only this, not the store."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from feature_store import keys, log_codec
from feature_store.hot_redis import HotRedis
from feature_store.redis_client import AsyncClient, translated
from feature_store.store import DECISIONS_KEPT, LoggedDecision, encoded

HISTORY_TTL_SECONDS = 90 * 86400
# Retention of the global streams: at most this many entries (approximately) and this old.
LOG_MAX_ENTRIES = 1_000_000  # over all shards
LOG_RETENTION_SECONDS = 30 * 86400
LOG_TRIM_EVERY_SECONDS = 5.0


class LogAppender:
    """``hot``: a hot connection (feature_store/hot_redis.py) that sends each batch as
    hiredis-packed commands in one write (the log process, on one server); else the
    batch is a redis-py pipeline on ``client`` (a cluster routes each command by key)."""

    def __init__(
        self,
        client: AsyncClient,
        *,
        log_max_entries: int = LOG_MAX_ENTRIES,
        log_retention_seconds: float = LOG_RETENTION_SECONDS,
        hot: HotRedis | None = None,
    ) -> None:
        self._redis = client
        self._hot = hot
        # Per shard: the logs together keep about log_max_entries.
        self._shard_max_entries = max(1, log_max_entries // keys.LOG_SHARDS)
        self._retention_seconds = log_retention_seconds
        # Trimming by age is a pair of XTRIMs: once in a while, not with every batch.
        self._trim_every = min(LOG_TRIM_EVERY_SECONDS, log_retention_seconds / 10)
        self._trimmed_at = 0.0

    async def append_decisions(self, decisions: Sequence[LoggedDecision]) -> None:
        commands: list[tuple[Any, ...]] = []
        maxlen = self._shard_max_entries
        for i, d in enumerate(decisions, start=1):
            if i % 8 == 0:  # compressing an entry takes ~20-60 us: let calls in between
                await asyncio.sleep(0)
            key = keys.customer_key(d.customer_id, keys.DECISIONS)
            stream = keys.decision_log(keys.log_shard(d.customer_id))
            ((field, blob),) = log_codec.encode_decision(d.entry).items()
            commands.append(("XADD", stream, "MAXLEN", "~", maxlen, "*", field, blob))
            commands.append(("LPUSH", key, encoded(d.summary)))
            commands.append(("LTRIM", key, 0, DECISIONS_KEPT - 1))
            commands.append(("EXPIRE", key, HISTORY_TTL_SECONDS))
        # Retention by age too: entries older than the retention leave both logs (stream
        # ids are milliseconds), checked every few seconds.
        now = time.time()
        if now - self._trimmed_at >= self._trim_every:
            self._trimmed_at = now
            oldest = f"{int((now - self._retention_seconds) * 1000)}-0"
            for stream in (*keys.decision_logs(), *keys.outcome_logs()):
                commands.append(("XTRIM", stream, "MINID", oldest))
        with translated("decision log write", quiet=True):  # the decision log reports
            if self._hot is not None:
                await self._hot.execute(commands)
                return
            pipe = self._redis.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            await pipe.execute()
