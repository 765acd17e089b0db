"""The decision path's two script calls (the READ and the RESERVE) on one multiplexed
connection: an asyncio Protocol that packs with hiredis, parses with hiredis' Reader and
matches replies to calls in order (Redis answers one connection's commands in the order
sent), so 16 calls in flight share one socket and no pool, lock or per-call task.
(Over 400 lines: one client: the connection protocol, the cluster's slot routing and the
reconnect policy.)

Measured against redis-py's asyncio client on the same READ (``python -m
benchmarks.bench_redis_client``): see docs/performance.md. ``redis://`` or ``unix://``,
with its user, password and db; on a cluster, ``HotCluster`` keeps one such connection
to each primary, routes each call by its slot and follows MOVED and ASK. Over TLS the
store keeps redis-py's client for these calls too.

Errors are redis-py's, so ``translated`` and the callers treat both clients alike: a call
whose connection is lost before it is written is sent once more on a new connection (it
did not run), one that cannot connect fails; a call whose reply is late raises TimeoutError and
closes the connection (the replies behind it would be late too; the call may have run, so
it is not sent again); a connection lost after a call was written fails that call with
ConnectionError.

Connecting is shared and backed off: the calls that find no connection wait for one
attempt together (never one each), and that attempt is cancelled once none of them waits
for it any more, so it never outlives its callers' budgets. After an attempt fails the
next one waits a jittered, doubling hold-off (``RECONNECT_FIRST`` up to ``RECONNECT_MAX``)
during which calls fail at once, without connecting: a Redis that refuses or drops
connections sees one attempt at a time from a worker, not a storm.
"""

from __future__ import annotations

import asyncio
import copy
from collections import deque
from collections.abc import Sequence
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import hiredis
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from common.backoff import jittered


def supports(url: str) -> bool:
    """Whether ``url`` names what this client speaks to: one server, no TLS."""
    return urlsplit(url).scheme in ("redis", "unix")


# The hold-off after a failed connect (common.backoff.jittered): the first, doubled after
# each failure in a row up to the most. At each step it is shorter than the service
# breaker's open period (engine/service/breaker.py: 50 ms doubling to 0.5 s by default),
# so that the breaker's probe finds the connection free to try.
RECONNECT_FIRST = 0.01
RECONNECT_MAX = 0.2


def _unwatched(future: asyncio.Future[Any]) -> None:
    """A reply nobody awaits: its failure is not reported as never retrieved."""
    future.add_done_callback(lambda f: None if f.cancelled() else f.exception())


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self._reader = hiredis.Reader(replyError=ResponseError)
        self.lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport (uvloop's is not an asyncio.Transport subclass)
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        waiting = self.waiting
        while True:
            reply = reader.gets()
            if reply is False:
                return
            future = waiting.popleft()
            if future.done():  # timed out: its reply is dropped
                continue
            if isinstance(reply, ResponseError):
                text = str(reply)
                future.set_exception(NoScriptError(text) if text.startswith("NOSCRIPT") else reply)
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or RedisConnectionError("connection closed")
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(
                    RedisConnectionError(f"connection lost: {type(self.lost).__name__}")
                )

    @property
    def usable(self) -> bool:
        return self.lost is None and self.transport is not None and not self.transport.is_closing()


class _Attempt:
    """One connect, awaited by every call that found no connection."""

    def __init__(self, task: asyncio.Task[_Connection]) -> None:
        self.task = task
        self.waiting = 0  # calls awaiting it; at 0 it is cancelled


class HotRedis:
    """EVALSHA on one connection to one server, made on first use and again after a
    loss; ``timeout_seconds`` bounds connecting and each reply."""

    def __init__(self, url: str, *, timeout_seconds: float = 0.25) -> None:
        parts = urlsplit(url)
        self._unix = parts.path if parts.scheme == "unix" else ""
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 6379
        path_db = parts.path.lstrip("/") if parts.scheme == "redis" else ""
        query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
        self._db = int(query.get("db") or path_db or 0)
        self._username = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None
        self._timeout = timeout_seconds
        self._connection: _Connection | None = None
        self._attempt: _Attempt | None = None
        self._failures = 0  # failed connects in a row
        self._retry_at = 0.0  # loop time before which no connect is tried
        # why the last connect failed
        self._failure: RedisConnectionError | RedisTimeoutError = RedisConnectionError()

    async def _connect(self) -> _Connection:
        try:
            # wait_for, not asyncio.timeout: the caller's own asyncio.timeout may be
            # around this call (the store's calls are cancel_safe), and none nests here
            return await asyncio.wait_for(self._open(), self._timeout)
        except TimeoutError as exc:
            raise RedisTimeoutError("timed out connecting to Redis") from exc
        except OSError as exc:
            raise RedisConnectionError(f"cannot connect to Redis: {exc.strerror}") from exc

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        if self._unix:
            _, protocol = await loop.create_unix_connection(_Connection, self._unix)
        else:
            _, protocol = await loop.create_connection(_Connection, self._host, self._port)
        setup: list[Sequence[Any]] = []
        if self._password is not None:
            auth = ("AUTH", self._password)
            setup.append(
                auth if self._username is None else ("AUTH", self._username, self._password)
            )
        if self._db:
            setup.append(("SELECT", self._db))
        for command in setup:
            await self._send(protocol, command)
        return protocol

    async def _ready(self) -> _Connection:
        """The connection; else the connect in flight, or a new one (not during the
        hold-off after a failed one: its error again, at once)."""
        connection = self._connection
        if connection is not None and connection.usable:
            return connection
        attempt = self._attempt
        if attempt is None:
            loop = asyncio.get_running_loop()
            wait = self._retry_at - loop.time()
            if wait > 0:
                # the last failure's kind again: a connect that timed out stays a timeout
                failure = self._failure
                raise type(failure)(f"{failure}; next attempt in {wait * 1000:.0f} ms")
            attempt = self._attempt = _Attempt(loop.create_task(self._connect()))
            attempt.task.add_done_callback(lambda _: self._attempted(attempt))
        attempt.waiting += 1
        try:
            # shielded: one caller's budget running out ends its wait, not the others'
            return await asyncio.shield(attempt.task)
        finally:
            attempt.waiting -= 1
            if attempt.waiting == 0 and not attempt.task.done():
                attempt.task.cancel()  # nobody waits for it: it must not outlive them
                if self._attempt is attempt:  # its callers' budgets ran out connecting
                    self._attempt = None
                    self._failed(RedisTimeoutError("timed out connecting to Redis"))

    def _attempted(self, attempt: _Attempt) -> None:
        """Keeps the attempt's connection, or starts the hold-off after its failure (a
        cancelled one was counted when it was given up)."""
        if self._attempt is attempt:
            self._attempt = None
        task = attempt.task
        if task.cancelled():
            return
        failure = task.exception()
        if failure is None:
            self._connection = task.result()
            self._failures, self._retry_at = 0, 0.0
        elif isinstance(failure, RedisConnectionError | RedisTimeoutError):
            self._failed(failure)
        else:  # AUTH or SELECT refused: the server is there, but no call can be made
            self._failed(RedisConnectionError(f"cannot connect to Redis: {failure}"))

    def _failed(self, failure: RedisConnectionError | RedisTimeoutError) -> None:
        current = self._connection
        if current is not None and current.usable:
            return  # an older attempt, after a newer one succeeded
        self._failures += 1
        hold = jittered(self._failures, RECONNECT_FIRST, RECONNECT_MAX)
        self._retry_at = asyncio.get_running_loop().time() + hold
        self._failure = failure

    def _send(self, connection: _Connection, command: Sequence[Any]) -> asyncio.Future[Any]:
        transport = connection.transport
        assert transport is not None
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        transport.write(hiredis.pack_command(tuple(command)))
        connection.waiting.append(future)
        return future

    def node(self, host: str, port: int) -> HotRedis:
        """A connection like this one (user, password, timeout) to another node."""
        other = copy.copy(self)
        other._unix, other._host, other._port = "", host, port
        other._connection, other._attempt = None, None
        other._failures, other._retry_at = 0, 0.0
        return other

    async def evalsha(
        self, sha: str, keys: Sequence[str], args: Sequence[Any], *, asking: bool = False
    ) -> Any:
        """``asking``: preceded by ASKING on the same connection (a cluster's ASK)."""
        command = ("EVALSHA", sha, len(keys), *keys, *args)
        for _ in range(2):
            connection = await self._ready()  # a failed connect is not tried again at once
            if not connection.usable:  # lost between the connect and now: not sent
                continue
            if asking:  # its OK is read in turn; a failure shows as the command's
                _unwatched(self._send(connection, ("ASKING",)))
            future = self._send(connection, command)
            break
        else:
            raise RedisConnectionError("connection lost before the command was sent")
        return await self._reply(connection, future)

    async def command(self, command: Sequence[Any]) -> Any:
        """Any other command, on the same connection (CLUSTER SLOTS)."""
        connection = await self._ready()
        return await self._reply(connection, self._send(connection, command))

    async def _reply(self, connection: _Connection, future: asyncio.Future[Any]) -> Any:
        """``future``'s reply, within the socket timeout (past it: TimeoutError, and the
        connection is closed)."""
        late = asyncio.get_running_loop().call_later(self._timeout, self._late, connection, future)
        try:
            return await future
        finally:
            late.cancel()

    async def execute(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """``commands`` in one write (a pipeline, not a transaction), their replies in
        order; the first error reply raised once all are in."""
        connection = await self._ready()
        transport = connection.transport
        assert transport is not None
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in commands]
        transport.write(b"".join(hiredis.pack_command(tuple(c)) for c in commands))
        connection.waiting.extend(futures)
        late = loop.call_later(self._timeout, self._late, connection, futures[-1])
        replies: list[Any] = []
        failed: BaseException | None = None
        try:
            for future in futures:
                try:
                    replies.append(await future)
                except ResponseError as exc:
                    failed = failed or exc
                    replies.append(exc)
        except BaseException:
            for future in futures:  # the connection is gone: the rest failed with it
                _unwatched(future)
            raise
        finally:
            late.cancel()
        if failed is not None:
            raise failed
        return replies

    @property
    def host(self) -> str:
        return self._host

    def _late(self, connection: _Connection, future: asyncio.Future[Any]) -> None:
        if future.done():
            return
        future.set_exception(RedisTimeoutError("Redis reply timed out"))
        if connection.transport is not None:
            connection.transport.abort()  # the replies behind it are late too

    async def aclose(self) -> None:
        attempt, self._attempt = self._attempt, None
        if attempt is not None:
            attempt.task.cancel()
        connection, self._connection = self._connection, None
        if connection is not None and connection.transport is not None:
            connection.transport.close()


class HotCluster:
    """EVALSHA routed to the primary that holds the slot of its first key: a hot
    connection to each primary, the slots learnt with CLUSTER SLOTS from the node of
    ``url`` (or any node known since). A MOVED reply updates the slot and sends the call
    to its new node; an ASK sends it there once, after ASKING; a lost node has the
    layout learnt again before the next call. Scripts touch one customer's keys, one
    slot (feature_store/scripts.py)."""

    REDIRECTS = 3  # MOVED or ASK followed per call

    def __init__(self, url: str, *, timeout_seconds: float = 0.25) -> None:
        self._seed = HotRedis(url, timeout_seconds=timeout_seconds)
        self._nodes: dict[tuple[str, int], HotRedis] = {}
        self._slots: list[tuple[str, int] | None] = [None] * 16384
        self._known: list[tuple[str, int]] = []
        self._stale = True
        self._learning: asyncio.Lock | None = None

    def _node(self, address: tuple[str, int]) -> HotRedis:
        node = self._nodes.get(address)
        if node is None:
            node = self._nodes[address] = self._seed.node(*address)
        return node

    async def _learn(self) -> None:
        if self._learning is None:
            self._learning = asyncio.Lock()
        async with self._learning:
            if not self._stale:
                return
            last: Exception | None = None
            for node in (*(self._node(a) for a in self._known), self._seed):
                try:
                    layout = await node.command(("CLUSTER", "SLOTS"))
                except (RedisConnectionError, RedisTimeoutError) as exc:
                    last = exc
                    continue
                known = []
                for start, end, primary, *_ in layout:
                    host = primary[0].decode() or node.host
                    address = (host, int(primary[1]))
                    known.append(address)
                    self._slots[int(start) : int(end) + 1] = [address] * (int(end) - int(start) + 1)
                self._known, self._stale = known, False
                return
            raise last or RedisConnectionError("no cluster node answered")

    def shards(self) -> set[str]:
        """``host:port`` of every primary as last learned."""
        return {f"{host}:{port}" for host, port in self._known}

    def shard_of(self, key: str) -> str:
        """``host:port`` of the primary serving ``key`` as last learned, "" before the
        layout is known."""
        address = self._slots[key_slot(key.encode())]
        return f"{address[0]}:{address[1]}" if address is not None else ""

    async def evalsha(self, sha: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        if self._stale:
            await self._learn()
        slot = key_slot(keys[0].encode())
        address, asking = self._slots[slot], False
        for _ in range(self.REDIRECTS + 1):
            if address is None:
                raise RedisConnectionError(f"slot {slot} has no node")
            try:
                return await self._node(address).evalsha(sha, keys, args, asking=asking)
            except ResponseError as exc:
                kind, _, where = str(exc).partition(" ")
                if kind not in ("MOVED", "ASK"):
                    raise
                host, _, port = where.partition(" ")[2].rpartition(":")
                address, asking = (host, int(port)), kind == "ASK"
                if kind == "MOVED":
                    self._slots[slot] = address
                    self._stale = True  # one slot moved: maybe more; learn at the next call
            except (RedisConnectionError, RedisTimeoutError):
                self._stale = True  # a node lost or failed over: learn before the next call
                raise
        raise RedisConnectionError(f"slot {slot}: more than {self.REDIRECTS} redirections")

    async def aclose(self) -> None:
        for node in (*self._nodes.values(), self._seed):
            await node.aclose()


Hot = HotRedis | HotCluster  # what the store's decision path calls


def connect_hot(url: str, *, cluster: bool, timeout_seconds: float) -> Hot | None:
    """The hot connection(s) for ``url`` (without our ``cluster`` parameter), or None
    where this client does not speak (TLS)."""
    if not supports(url):
        return None
    if cluster:
        return HotCluster(url, timeout_seconds=timeout_seconds)
    return HotRedis(url, timeout_seconds=timeout_seconds)
