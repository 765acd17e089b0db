"""Connecting to Redis (one server or a Redis Cluster), and the one place Redis errors
become the project's.

``REDIS_URL`` may name one server or any node of a cluster: ``connect`` and
``connect_sync`` ask the server whether it runs in cluster mode (``INFO cluster``) and
build a cluster client when it does. ``?cluster=yes`` (or ``no``) at the end of the URL
says so without asking: a server starting while its cluster is unreachable then still
speaks the cluster protocol once the cluster is back.

Every module that talks to Redis runs its calls inside ``translated(...)``: a
``redis.RedisError`` leaves it as ``FeatureStoreUnavailable`` naming what failed, so no
raw redis exception reaches the core, a gRPC caller or a CLI user.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeAlias
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterPipeline
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    ClusterDownError,
    RedisClusterException,
    RedisError,
    SlotNotCoveredError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from common.errors import ConfigurationError, FeatureStoreUnavailable

log = logging.getLogger(__name__)

# A client of one server or of a cluster: the store, the loader and the jobs use only what
# both offer (single-slot scripts, per-key commands, non-transactional pipelines).
AsyncClient: TypeAlias = aioredis.Redis | aioredis.RedisCluster
SyncClient: TypeAlias = redis.Redis | redis.RedisCluster
# Errors of either: a cluster client raises RedisClusterException (not a RedisError) when
# no node answers or a slot has no node.
REDIS_ERRORS = (RedisError, RedisClusterException)


LOG_EVERY_SECONDS = 5.0
_last_logged: dict[str, float] = {}


def log_failure(action: str, detail: object) -> None:
    """The details of a failure (address, Redis's own words) go to the log, at most once
    per ``LOG_EVERY_SECONDS`` for each action; callers and clients see only the action."""
    now = time.monotonic()
    if now - _last_logged.get(action, -LOG_EVERY_SECONDS) >= LOG_EVERY_SECONDS:
        _last_logged[action] = now
        log.warning("%s failed: %s", action, detail)


def unavailable(action: str, detail: object, *, quiet: bool = False) -> FeatureStoreUnavailable:
    """``quiet``: the caller reports the failure itself (the breaker's "down" line, the
    decision log's "writes failing"), with the exception's ``detail``."""
    if not quiet:
        log_failure(action, detail)
    return FeatureStoreUnavailable(
        f"{action} failed", timed_out=isinstance(detail, RedisTimeoutError), detail=str(detail)
    )


@contextmanager
def translated(action: str, *, quiet: bool = False) -> Iterator[None]:
    """``with translated("feature store read"): await ...``: Redis errors inside become
    ``FeatureStoreUnavailable("feature store read failed")``, the details logged (no
    address or Redis message reaches a caller). Works around awaits too (a plain context
    manager: nothing is awaited on exit). ``quiet`` as ``unavailable``'s."""
    try:
        yield
    except REDIS_ERRORS as exc:
        raise unavailable(action, exc, quiet=quiet) from exc


_YES, _NO = ("yes", "true", "1"), ("no", "false", "0")
_modes: dict[str, bool] = {}  # URL -> cluster mode, once known


def where(url: str) -> str:
    """``host:port`` of a Redis URL: what a log line may say of it (no password)."""
    parts = urlsplit(url)
    return f"{parts.hostname or '?'}:{parts.port or 6379}"


def cluster_mode(url: str) -> tuple[str, bool]:
    """The URL without our ``cluster`` parameter, and whether it names a cluster: as the
    parameter says, else as the server says (asked once per URL). A server that cannot
    be asked is taken for a single server, with a warning naming the parameter."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    said = [value.lower() for name, value in query if name == "cluster"]
    plain = urlunsplit(parts._replace(query=urlencode([q for q in query if q[0] != "cluster"])))
    if said:
        if said[-1] not in _YES + _NO:
            raise ConfigurationError(f"REDIS_URL: cluster={said[-1]!r}: say yes or no")
        return plain, said[-1] in _YES
    if plain not in _modes:
        probe = redis.Redis.from_url(plain, socket_timeout=2, socket_connect_timeout=2)
        try:
            _modes[plain] = probe.info("cluster").get("cluster_enabled") == 1
        except RedisError as exc:
            log.warning(
                "cannot ask %s whether it is a cluster (%s): taking it for a single server;"
                " add ?cluster=yes to REDIS_URL if it is one",
                where(plain),
                type(exc).__name__,
            )
            return plain, False  # asked again next time
        finally:
            probe.close()
    return plain, _modes[plain]


def connect_sync(url: str, *, timeout_seconds: float | None = None) -> SyncClient:
    """A blocking client for jobs and the CLI: of a cluster when ``url`` names one."""
    plain, cluster = cluster_mode(url)
    options: dict[str, Any] = {}
    if timeout_seconds is not None:
        options = {"socket_timeout": timeout_seconds, "socket_connect_timeout": timeout_seconds}
    if cluster:
        return redis.RedisCluster.from_url(plain, **options)
    return redis.Redis.from_url(plain, **options)


# Sent again after: a connection that failed (closed by the server while idle, refused).
# Not after a timeout: the command may have run all the same, and a script that counts
# would count twice; the caller hears UNAVAILABLE, or its decision degrades.
_RETRIED = (RedisConnectionError,)


class _Cluster(aioredis.RedisCluster):
    """The asyncio cluster client, without its retry of a command whose reply timed out
    (for the reason above); lost nodes and moved slots are still followed.

    A burst queues for a connection, as on one server: redis-py's asyncio cluster client
    fails a command at once with ``MaxConnectionsError`` when its node's pool is in use
    (redis/redis-py#3135). Here a command or a pipeline first takes one of
    ``max_connections`` places: a command uses one connection, a pipeline one per node it
    reaches, so no node's pool is ever found full. The callers' budgets bound the wait."""

    # redis-py's: (ConnectionError, TimeoutError, ClusterDownError, SlotNotCoveredError)
    ERRORS_ALLOW_RETRY = (RedisConnectionError, ClusterDownError, SlotNotCoveredError)  # type: ignore[assignment]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.places = asyncio.Semaphore(kwargs.get("max_connections", 100))  # redis-py's default

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self.places:
            return await super().execute_command(*args, **kwargs)

    def pipeline(
        self, transaction: Any | None = None, shard_hint: Any | None = None
    ) -> ClusterPipeline:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # refused, as redis-py does
        return _Pipeline(self, transaction)  # type: ignore[abstract]


class _Pipeline(ClusterPipeline):
    """A pipeline that takes its client's place before it sends (``_Cluster``)."""

    def __init__(self, client: _Cluster, transaction: Any | None = None) -> None:
        super().__init__(client, transaction)
        self._places = client.places

    async def execute(
        self, raise_on_error: bool = True, allow_redirections: bool = True
    ) -> list[Any]:
        async with self._places:
            return await super().execute(raise_on_error, allow_redirections)


def connect(url: str, *, timeout_seconds: float = 0.25, max_connections: int = 64) -> AsyncClient:
    """An asyncio client that fails fast: callers degrade rather than wait on retries.

    One server: the pool blocks (up to the timeout) when all connections are busy, instead
    of failing at once as the default pool does: a burst of calls queues for a
    connection. A cluster: ``max_connections`` to each node; the client follows MOVED and
    ASK and, when a node is lost, learns the new layout and retries (the callers' budgets
    bound how long).
    """
    plain, cluster = cluster_mode(url)
    if cluster:
        return _Cluster.from_url(
            plain,
            max_connections=max_connections,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            health_check_interval=0,
        )
    pool = aioredis.BlockingConnectionPool.from_url(
        plain,
        max_connections=max_connections,
        timeout=timeout_seconds,
        socket_timeout=timeout_seconds,
        socket_connect_timeout=timeout_seconds,
        retry=Retry(NoBackoff(), 1, supported_errors=_RETRIED),
        health_check_interval=0,
    )
    return aioredis.Redis.from_pool(pool)  # the client owns the pool: aclose() closes it


async def aclose(client: AsyncClient) -> None:
    """Closes the client and its connections. (redis-py 8.1's cluster client skips that
    once a timeout or a lost node has marked it for a new layout: they would leak.)"""
    await client.aclose()
    if isinstance(client, aioredis.RedisCluster):
        await client.nodes_manager.aclose()
        await client.nodes_manager.aclose("startup_nodes")
