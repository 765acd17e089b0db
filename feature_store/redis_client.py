"""Connecting to Redis, and the one place Redis errors become the project's.

Every module that talks to Redis runs its calls inside ``translated(...)``: a
``redis.RedisError`` leaves it as ``FeatureStoreUnavailable`` naming what failed, so no
raw redis exception reaches the core, a gRPC caller or a CLI user.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from common.errors import FeatureStoreUnavailable

log = logging.getLogger(__name__)


LOG_EVERY_SECONDS = 5.0
_last_logged: dict[str, float] = {}


def log_failure(action: str, detail: object) -> None:
    """The details of a failure (address, Redis's own words) go to the log, at most once
    per ``LOG_EVERY_SECONDS`` for each action; callers and clients see only the action."""
    now = time.monotonic()
    if now - _last_logged.get(action, -LOG_EVERY_SECONDS) >= LOG_EVERY_SECONDS:
        _last_logged[action] = now
        log.warning("%s failed: %s", action, detail)


def unavailable(action: str, detail: object) -> FeatureStoreUnavailable:
    log_failure(action, detail)
    return FeatureStoreUnavailable(f"{action} failed")


@contextmanager
def translated(action: str) -> Iterator[None]:
    """``with translated("feature store read"): await ...``: Redis errors inside become
    ``FeatureStoreUnavailable("feature store read failed")``, the details logged (no
    address or Redis message reaches a caller). Works around awaits too (a plain context
    manager: nothing is awaited on exit)."""
    try:
        yield
    except RedisError as exc:
        raise unavailable(action, exc) from exc


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
