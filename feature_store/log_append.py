"""The decision log's writes to Redis: one pipeline a batch, each decision an XADD to its
customer's shard of the log and its summary at the head of the customer's list. Used by
the store (in-process writer, tests) and by the log process (engine/service/log_process.py),
which imports only this, not the store."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from feature_store import keys, log_codec, scripts
from feature_store.hot_redis import HotRedis
from feature_store.redis_client import AsyncClient, translated
from feature_store.store import DECISIONS_KEPT, LoggedDecision, encoded

HISTORY_TTL_SECONDS = 90 * 86400
# Retention of the global streams: at most this many entries (approximately) and this old.
LOG_MAX_ENTRIES = 1_000_000  # over all shards
LOG_RETENTION_SECONDS = 30 * 86400
LOG_TRIM_EVERY_SECONDS = 5.0
# A decision id written in the last this many seconds is not written again: retries come
# within seconds (the writer's back-off is at most 0.5 s, a log process restarts within
# 5 s). ~80 bytes an id: 2,000 decisions/s keep ~20 MB.
DEDUPE_SECONDS = 120.0


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
        """Each decision once into its customer's shard of the log (a batch sent again
        after a lost reply adds nothing: ``scripts.APPEND_DECISIONS``), and its summary
        at the head of the customer's list (read once, whatever was pushed twice)."""
        commands: list[tuple[Any, ...]] = []
        now = time.time()
        for i, d in enumerate(decisions, start=1):
            if i % 8 == 0:  # compressing an entry takes ~20-60 us: let calls in between
                await asyncio.sleep(0)
            shard = keys.log_shard(d.customer_id)
            ((field, blob),) = log_codec.encode_decision(d.entry).items()
            # One script a decision, in decision order: the shards' entry ids then follow
            # the decisions' times, as the readers merge them (log_reader.log_order).
            commands.append(
                ("EVAL", scripts.APPEND_DECISIONS, 2, keys.decision_log(shard),
                 keys.logged_ids(shard), self._shard_max_entries, now, d.id, field, blob)
            )  # fmt: skip
            # The summary is pushed plainly (a script here cost ~8 us of Redis a decision);
            # one pushed again is read once (feature_store.redis_store keeps the newest
            # first, each decision once).
            history = keys.customer_key(d.customer_id, keys.DECISIONS)
            commands.append(("LPUSH", history, encoded(d.summary)))
            commands.append(("LTRIM", history, 0, DECISIONS_KEPT - 1))
            commands.append(("EXPIRE", history, HISTORY_TTL_SECONDS))
        # Retention by age too: entries older than the retention leave both logs (stream
        # ids are milliseconds), checked every few seconds.
        if now - self._trimmed_at >= self._trim_every:
            self._trimmed_at = now
            oldest = f"{int((now - self._retention_seconds) * 1000)}-0"
            for stream in (*keys.decision_logs(), *keys.outcome_logs()):
                commands.append(("XTRIM", stream, "MINID", oldest))
            for shard in range(keys.LOG_SHARDS):  # the ids a retry is checked against
                commands.append(
                    ("ZREMRANGEBYSCORE", keys.logged_ids(shard), "-inf", now - DEDUPE_SECONDS)
                )
        with translated("decision log write", quiet=True):  # the decision log reports
            if self._hot is not None:
                await self._hot.execute(commands)
                return
            pipe = self._redis.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            await pipe.execute()
