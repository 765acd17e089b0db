"""Redis (or a cluster's primary) killed and restarted under an open-loop load through
`arbiter serve`: what callers got, and what the service said in its log.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import grpc
import redis

from arbiter.v1 import decision_pb2, decision_pb2_grpc
from benchmarks.chaos.harness import CUSTOMERS, WEB, Tally, train_model
from benchmarks.common import black_hole, start_server, stop_server
from common.errors import ConfigurationError
from common.ports import free_port
from engine.api.background import BackgroundServer
from engine.settings import ServerSettings, load_definitions
from feature_store.embedded import EmbeddedRedis
from feature_store.loader import load_profiles
from feature_store.log_reader import read_decisions
from training.world import generate


@dataclass
class Outage:
    """Open-loop Decides with a short deadline while Redis (or a cluster primary) is
    killed, and what they got."""

    tally: Tally
    worst_ms: float
    # seconds to the last degraded answer from Redis answering again (a cluster: from the
    # primary's kill, its replica taking over meanwhile)
    full_after: float
    tracebacks: int  # log records with a traceback
    warnings: list[str]  # the WARNING and ERROR lines, in order, without repeats
    served: int  # decisions answered OK (Redis restarted empty: from the kill on)
    logged: int  # of them, in the decision log after the graceful stop

    @property
    def lost(self) -> int:
        return self.served - self.logged

    def row(self, name: str) -> str:
        """A line of the chaos table."""
        return (
            f"| {name} | {self.tally.calls:,} | {self.tally.failed} | {self.worst_ms:.0f} ms"
            f" | {self.tally.p99() / 1000:.1f} ms | {self.tally.degraded:,}"
            f" | {self.full_after:.2f} | {self.lost} / {self.doubled} | {self.tracebacks} |"
        )

    doubled: int  # logged more than once


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _start_again(own: _Killable) -> None:
    for _ in range(50):  # the port can stay busy for a moment after a kill
        try:
            own.start()
            return
        except ConfigurationError:
            time.sleep(0.05)


def _lines(records: list[logging.LogRecord]) -> list[str]:
    """The records as lines, a run of the same line once."""
    lines: list[str] = []
    for r in records:
        line = f"{r.levelname} {r.name}: {r.getMessage()[:120]}"
        if not lines or lines[-1] != line:
            lines.append(line)
    return lines


def kill_restart(
    data_dir: Path,
    *,
    seconds: float = 14.0,
    kill_at: float = 7.0,
    back_at: float = 12.0,
    rate: float = 150.0,
    deadline: float = 0.2,
    workers: int = 0,
    model: bool = False,
    empty: bool = False,
    blackhole: bool = False,
    tree: Path | None = None,
) -> Outage:
    """Redis (AOF) SIGKILLed at ``kill_at`` and restarted on its port at ``back_at``,
    under ``rate`` Decide/s open loop with a ``deadline`` each, as a user's probe: every
    call should end within its deadline (degraded is fine), full answers again within a
    second, the log whole. ``workers`` > 0: `arbiter serve --workers N` in a process of
    its own (its log read for tracebacks and warnings), else a server in this one.
    ``model``: a trained, compiled model serves (else value-only ranking). ``empty``:
    Redis comes back without its data (its AOF gone, as a server without persistence).
    ``blackhole``: while Redis is down its port takes no connection and answers no SYN
    (a listener whose queue is full: the kernel drops new SYNs), as a host gone from the
    network, instead of refusing them. ``tree``: the server's code from another checkout
    (with ``workers``), for a before and after in one run."""
    records = _Records()
    logging.getLogger().addHandler(records)
    own = EmbeddedRedis(data_dir / "redis", options=("--appendonly", "yes"))
    own.start()
    client = redis.Redis.from_url(own.url)
    settings = ServerSettings(data_dir=data_dir, port=0)
    load_profiles(client, load_definitions(settings).schema, generate(CUSTOMERS, 7).profiles())
    client.close()
    if model:
        train_model(settings)
    log_path = data_dir / "serve.log"
    with _serving(settings, own.url, workers, tree, log_path) as call:
        probe = _open_loop(call, own, seconds, kill_at, back_at, rate, deadline, empty, blackhole)
    logging.getLogger().removeHandler(records)
    client = redis.Redis.from_url(own.url)
    logged_ids = Counter(d["decision_id"] for d in read_decisions(client))
    client.close()
    own.stop()
    text = log_path.read_text(errors="replace").splitlines() if workers else []
    # restarted empty: what was logged before the kill went with Redis's data
    kept_from = probe.killed_at if empty else 0.0
    return _outage(probe, probe.answered_at, records, logged_ids, text, kept_from)


@contextmanager
def _serving(
    settings: ServerSettings,
    url: str,
    workers: int,
    tree: Path | None,
    log_path: Path,
    breaker_seconds: float | None = None,
) -> Iterator[Any]:
    """Decide on a server for ``url``: `arbiter serve --workers N` in a process of its
    own (from ``tree``; its output to ``log_path``) when ``workers`` > 0, else one in
    this process; stopped gracefully at the end (the log writer flushes what it holds)."""
    if breaker_seconds is not None:
        settings = settings.model_copy(update={"breaker_seconds": breaker_seconds})
    if not workers:
        server = BackgroundServer(settings, url)
        try:
            yield server.decisions.Decide
        finally:
            server.stop()
        return
    serving = settings.model_copy(update={"redis_url": url})
    port = free_port()
    with log_path.open("wb") as log_file:
        process = start_server(
            serving,
            port,
            workers,
            log=log_file,
            tree=tree,
            breaker_seconds=str(settings.breaker_seconds),
        )
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                yield decision_pb2_grpc.DecisionServiceStub(channel).Decide
        finally:
            stop_server(process, 60, log_path)


def _outage(
    probe: _Probe,
    since: float,
    records: _Records,
    logged_ids: Counter[str],
    server_log: list[str],
    kept_from: float = 0.0,
) -> Outage:
    """The figures of an open loop: degraded answers after ``since``, tracebacks and
    warnings from our log records and ``server_log`` (a server process's lines), and the
    decisions served from ``kept_from`` on against ``logged_ids``."""
    found = records.records
    after = [t - since for t in probe.degraded_at if t >= since]
    served = [d for d, at in probe.served if at >= kept_from]
    return Outage(
        tally=probe.tally,
        worst_ms=probe.worst * 1000,
        full_after=max(after, default=0.0),
        tracebacks=sum(r.exc_info is not None for r in found)
        + sum(line.startswith("Traceback") for line in server_log),
        warnings=_lines(found)
        + [line[24:300] for line in server_log if " WARNING " in line or " ERROR " in line],
        served=len(served),
        logged=sum(1 for d in served if d in logged_ids),
        doubled=sum(1 for c in logged_ids.values() if c > 1),
    )


class _Killable(Protocol):
    data_dir: Path | None
    port: int

    def kill(self) -> None: ...

    def start(self, timeout: float = 10.0) -> object: ...


def _open_loop(
    decide: Any,
    own: _Killable,
    seconds: float,
    kill_at: float,
    back_at: float,
    rate: float,
    deadline: float,
    empty: bool = False,
    blackhole: bool = False,
) -> _Probe:
    tally = Tally()
    served: list[tuple[str, float]] = []
    degraded_at: list[float] = []
    lock = threading.Lock()
    worst = [0.0]

    def done(future: Any, sent: float) -> None:
        took = time.monotonic() - sent
        try:
            reply = future.result()
        except grpc.RpcError as exc:
            tally.add(exc.code().name, took)
        else:
            tally.add("OK", took, reply.degraded, reply.degraded_reason)
            with lock:
                served.append((reply.decision_id, time.monotonic()))
                if reply.degraded:
                    degraded_at.append(time.monotonic())
        with lock:
            worst[0] = max(worst[0], took)

    pending: list[Any] = []

    def send() -> None:
        """The open loop, in a thread of its own: the faults below (a restart can wait
        seconds for its port) do not hold up its pace. (Redis is started again from this
        thread: a child dies with the thread that started it.)"""
        n = 0
        while time.monotonic() - start < seconds:
            request = decision_pb2.DecideRequest(
                customer_id=f"cust-{1 + n % CUSTOMERS:06d}", channel=WEB
            )
            sent = time.monotonic()
            future = decide.future(request, timeout=deadline)
            future.add_done_callback(functools.partial(done, sent=sent))
            pending.append(future)
            n += 1
            time.sleep(max(0.0, start + n / rate - time.monotonic()))

    start = time.monotonic()
    sender = threading.Thread(target=send)
    sender.start()
    time.sleep(max(0.0, start + kill_at - time.monotonic()))
    own.kill()
    killed_at, answered_at = time.monotonic(), 0.0
    hole = black_hole(own.port) if blackhole else []
    if back_at < seconds:
        time.sleep(max(0.0, start + back_at - time.monotonic()))
        for s in hole:
            s.close()
        if empty and own.data_dir is not None:
            shutil.rmtree(own.data_dir, ignore_errors=True)
        _start_again(own)
        answered_at = time.monotonic()
    sender.join()
    for future in pending:
        with contextlib.suppress(grpc.RpcError, grpc.FutureCancelledError):
            future.result(timeout=5)
    return _Probe(tally, served, degraded_at, killed_at, answered_at, worst[0])


@dataclass
class _Probe:
    """What an open loop saw: its calls, the decisions served (id, when), when degraded
    answers came, when Redis was killed and when it answered again, the worst latency
    (times ``time.monotonic()``)."""

    tally: Tally
    served: list[tuple[str, float]]
    degraded_at: list[float]
    killed_at: float
    answered_at: float
    worst: float


class _Primary:
    """One primary of a cluster, killed by the open loop (and never started again: its
    replica takes over)."""

    def __init__(self, node: EmbeddedRedis) -> None:
        self._node = node
        self.data_dir: Path | None = None
        self.port = node.port

    def kill(self) -> None:
        self._node.kill()

    def start(self, timeout: float = 10.0) -> object:
        return self


def primary_killed(
    data_dir: Path,
    *,
    seconds: float = 10.0,
    kill_at: float = 3.0,
    rate: float = 150.0,
    deadline: float = 0.2,
    workers: int = 0,
    tree: Path | None = None,
) -> Outage:
    """A Redis Cluster (3 primaries, a replica each, node timeout 1 s) under ``rate``
    Decide/s open loop with a ``deadline`` each; one primary SIGKILLed at ``kill_at``:
    its replica takes over; every call within its deadline, full answers again once it
    has, the log whole (its shards on the other primaries and the promoted replica).
    ``workers`` and ``tree`` as kill_restart's."""
    from feature_store.embedded import EmbeddedCluster

    records = _Records()
    logging.getLogger().addHandler(records)
    with EmbeddedCluster(masters=3, replicas=1, node_timeout_ms=1000) as cluster:
        settings = ServerSettings(data_dir=data_dir, port=0)
        client = redis.RedisCluster.from_url(cluster.url.split("?")[0])
        load_profiles(client, load_definitions(settings).schema, generate(CUSTOMERS, 7).profiles())
        train_model(settings)
        victim = _Primary(cluster.primaries()[0])
        log_path = data_dir / "serve.log"
        with _serving(settings, cluster.url, workers, tree, log_path, breaker_seconds=0.2) as call:
            probe = _open_loop(call, victim, seconds, kill_at, seconds + 1, rate, deadline)
        logged_ids = Counter(d["decision_id"] for d in read_decisions(client))
        client.close()
    logging.getLogger().removeHandler(records)
    text = log_path.read_text(errors="replace").splitlines() if workers else []
    return _outage(probe, probe.killed_at, records, logged_ids, text)
