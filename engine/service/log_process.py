"""The decision log written by a process of its own, so that compressing entries and
packing Redis commands costs the serving process nothing (measured: ~0.2 ms of its core a
decision in-process; see docs/performance.md).

The server builds each entry (the inputs exactly as served) and its JSON, and writes it
down a pipe to the log process as one frame: three lengths, then the customer id, the
entry and the summary, as bytes. The log process batches what it has read, appends it in
one pipeline (feature_store/log_append.py, as the in-process writer does) with the same
retries while Redis is away, and acknowledges each batch with its count. The server keeps
every frame until it is acknowledged: a log process that dies is started again and given
the frames it had not acknowledged (an entry it wrote but did not acknowledge is then
written twice); a graceful stop waits until everything submitted is acknowledged.
``pending`` (submitted, not acknowledged) is bounded by the queue size: past it new
decisions are dropped and counted, as with the in-process writer.

    python -m engine.service.log_process   (started by the server, config in its env)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import struct
import sys
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from common import logs, waits
from engine.service import metrics
from engine.service.decision_log import DecisionLogWriter, log_entry
from feature_store import hot_redis, redis_client
from feature_store.hot_redis import HotRedis
from feature_store.log_append import LogAppender
from feature_store.store import LoggedDecision, encoded

if TYPE_CHECKING:
    from engine.core.decision import Decision, DecisionRequest

log = logging.getLogger(__name__)
CONFIG_ENV = "ARBITER_LOG_PROCESS"  # the child's settings (JSON), the Redis URL among them
_HEADER = struct.Struct("!HHII")  # customer id, decision id, entry, summary lengths
_HURRY = _HEADER.pack(0xFFFF, 0, 0, 0)  # a flush: retry a failed write at once
_ACK = struct.Struct("!I")
RESTART_SECONDS = (0.1, 5.0)  # backoff between restarts of a dying log process
CHILD_EXIT_SECONDS = 0.5  # at a stop, what the child is given once the flush is over
STEADY_SECONDS = 30.0  # a log process that ran this long restarts after the shortest wait
CHILD_CLOSE_SECONDS = 10.0  # at end of input: how long the child tries to write the rest
READY_SECONDS = 10.0  # the server waits at most this for its log process at start


def frame(logged: LoggedDecision) -> bytes:
    cid, did = logged.customer_id.encode(), logged.id.encode()
    entry, summary = encoded(logged.entry), encoded(logged.summary)
    header = _HEADER.pack(len(cid), len(did), len(entry), len(summary))
    return b"".join((header, cid, did, entry, summary))


class LogProcess:
    """The DecisionLogWriter's interface (submit, pending, flush, close, written,
    dropped), the writing done by a child process on ``redis_url``."""

    def __init__(
        self,
        redis_url: str,
        names: tuple[str, ...],
        *,
        max_queue: int = 10_000,
        batch: int = 256,
        log_max_entries: int,
        log_retention_seconds: float,
    ) -> None:
        self._names = names
        self._max_queue = max_queue
        self._batch = batch
        self._config = json.dumps(
            {
                "redis_url": redis_url,
                "max_queue": max_queue + batch,  # never drops what the server accepted
                "batch": batch,
                "log_max_entries": log_max_entries,
                "log_retention_seconds": log_retention_seconds,
            }
        )
        self._queue: deque[tuple[Decision, DecisionRequest, float]] = deque()
        self._unacked: deque[bytes] = deque()  # sent to the child, not yet written
        self._accepted = 0
        self.written = 0
        self.dropped = 0
        self.restarts = 0
        self._wake = asyncio.Event()
        self._acked = asyncio.Event()
        self._ready = asyncio.Event()
        self._closing = False
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="decision-log")

    async def ready(self, timeout: float = READY_SECONDS) -> bool:
        """Whether the log process started and reached Redis (or gave up trying) within
        ``timeout``: the server waits for it before it serves, so that its first decisions
        are not logged late (a cluster client's start is ~0.5 s)."""
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
            return True
        except TimeoutError:
            log.warning("decision log: the log process is not ready after %.0f s", timeout)
            return False

    def submit(self, decision: Decision, request: DecisionRequest, now: float) -> None:
        if self.pending >= self._max_queue:
            self.dropped += 1
            metrics.LOG_DROPPED.inc()
            return
        self._queue.append((decision, request, now))
        self._accepted += 1
        self._wake.set()

    @property
    def pending(self) -> int:
        return self._accepted - self.written

    async def _spawn(self) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            __name__,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, CONFIG_ENV: self._config},
            # its own session: a Ctrl-C to the server's terminal does not stop it before
            # the server has handed it everything
            start_new_session=True,
        )

    async def _run(self) -> None:
        backoff = RESTART_SECONDS[0]
        while True:
            try:
                proc = self._proc = await self._spawn()
            except OSError:
                log.exception("decision log: cannot start the log process")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RESTART_SECONDS[1])
                continue
            started = time.monotonic()
            acks = asyncio.get_running_loop().create_task(self._acks(proc))
            acks.add_done_callback(lambda _: self._wake.set())
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                await self._feed(proc, acks)
            if self._closing:
                return
            code = await proc.wait()
            self.restarts += 1
            log.error(
                "decision log: the log process exited (code %s); starting another, %d"
                " entries to write again",
                code,
                len(self._unacked),
            )
            if time.monotonic() - started > STEADY_SECONDS:
                backoff = RESTART_SECONDS[0]  # it had run well: a new failure, a short wait
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RESTART_SECONDS[1])

    async def _feed(self, proc: asyncio.subprocess.Process, acks: asyncio.Task[None]) -> None:
        stdin = proc.stdin
        assert stdin is not None
        if self._unacked:  # a new child: what the last one did not acknowledge, first
            stdin.write(b"".join(self._unacked))
            await stdin.drain()
        while not acks.done():
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            frames: list[bytes] = []
            while self._queue and len(frames) < self._batch:
                item = self._queue.popleft()
                try:
                    frames.append(frame(log_entry(*item, self._names)))
                except Exception:  # a bug, not an outage: drop the entry, keep the writer
                    log.exception("decision log: dropping a decision that cannot be logged")
                    self._accepted -= 1  # never to be written: flush must not wait for it
                    self.dropped += 1
                    metrics.LOG_DROPPED.inc()
                # one entry at a time between the calls in flight (measured, sequential
                # decide(): p50 0.72 -> 0.54 ms, p99 1.33 -> 0.83 ms against 8 at a time)
                await asyncio.sleep(0)
            self._unacked.extend(frames)
            stdin.write(b"".join(frames))
            await stdin.drain()

    async def _acks(self, proc: asyncio.subprocess.Process) -> None:
        stdout = proc.stdout
        assert stdout is not None
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionResetError):
            while True:
                (n,) = _ACK.unpack(await stdout.readexactly(_ACK.size))
                if n == 0:  # the child is up (an ack of nothing)
                    self._ready.set()
                    continue
                for _ in range(n):
                    self._unacked.popleft()
                self.written += n
                metrics.LOG_WRITTEN.inc(n)
                metrics.LOG_QUEUE.set(self.pending)
                self._acked.set()

    async def flush(self, timeout: float = 5.0) -> bool:
        """Waits until everything submitted is written; False on timeout. A log process
        waiting out a backoff tries again at once."""
        target = self._accepted
        loop = asyncio.get_running_loop()
        until = loop.time() + timeout
        proc = self._proc
        if self.written < target and proc is not None and proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError, RuntimeError):
                proc.stdin.write(_HURRY)
        while self.written < target:
            self._acked.clear()
            if not await waits.until_set(self._acked, until - loop.time()):
                return False
        return True

    async def close(self, timeout: float = 5.0) -> None:
        """Flushes, then ends the log process, within ``timeout`` in all (a store that
        stays down must not hold the stop for a flush and then the child's own)."""
        loop = asyncio.get_running_loop()
        until = loop.time() + timeout
        if not await self.flush(timeout):
            log.error("decision log: %d decisions not written at shutdown", self.pending)
        self._closing = True
        self._wake.set()
        proc = self._proc
        if proc is not None and proc.returncode is None:
            if proc.stdin is not None:
                proc.stdin.close()  # end of input: the child writes what it has and exits
            try:
                await asyncio.wait_for(proc.wait(), max(CHILD_EXIT_SECONDS, until - loop.time()))
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


async def _child(config: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    acks, _ = await loop.connect_write_pipe(asyncio.Protocol, sys.stdout.buffer)
    url = config["redis_url"]
    client = redis_client.connect(url, timeout_seconds=5.0, max_connections=4)
    plain, cluster = redis_client.cluster_mode(url)
    # one server: each batch hiredis-packed in one write (a cluster: redis-py routes)
    hot = None if cluster or not hot_redis.supports(plain) else HotRedis(plain, timeout_seconds=5.0)
    appender = LogAppender(
        client,
        log_max_entries=config["log_max_entries"],
        log_retention_seconds=config["log_retention_seconds"],
        hot=hot,
    )
    writer = DecisionLogWriter(
        appender,
        (),
        max_queue=config["max_queue"],
        batch=config["batch"],
        on_written=lambda n: acks.write(_ACK.pack(n)),
    )
    writer.start()
    try:  # connected (a cluster: its layout learnt) before the server serves
        await asyncio.wait_for(client.ping(), READY_SECONDS / 2)
    except (TimeoutError, *redis_client.REDIS_ERRORS) as exc:  # the writer retries
        log.warning("decision log: Redis not reachable at start (%r)", exc)
    acks.write(_ACK.pack(0))
    flushes: set[asyncio.Task[bool]] = set()
    while True:
        try:
            header = await reader.readexactly(_HEADER.size)
        except asyncio.IncompleteReadError:
            break  # the server closed the pipe (a stop) or is gone
        if header == _HURRY:
            flushing = loop.create_task(writer.flush())
            flushes.add(flushing)
            flushing.add_done_callback(flushes.discard)
            continue
        a, d, b, c = _HEADER.unpack(header)
        body = await reader.readexactly(a + d + b + c)
        cid, did = body[:a].decode(), body[a : a + d].decode()
        writer.submit_logged(
            LoggedDecision(cid, body[a + d : a + d + b], body[a + d + b :], decision_id=did)
        )
    await writer.close(CHILD_CLOSE_SECONDS)
    if hot is not None:
        await hot.aclose()
    await redis_client.aclose(client)


def main() -> None:
    logs.configure(worker="log")
    asyncio.run(_child(json.loads(os.environ.pop(CONFIG_ENV))))


if __name__ == "__main__":
    main()
