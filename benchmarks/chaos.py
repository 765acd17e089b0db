"""`make chaos`: the service under the faults and callers production brings, each scenario
on a real server and a real Redis of its own, with the figures printed.

    python -m benchmarks.chaos [--fuzz 100000] [--soak-seconds 120] [--window 10]

- kill: Redis (AOF) killed at 7 s and restarted at 12 s under 150 Decide/s with a 200 ms
  deadline, through `arbiter serve --workers 2` (again with its port black-holed while
  down, and restarted empty); a Redis Cluster's primary killed the same way;
- redis: Redis paused for 1 s, then killed and restarted, under a steady Decide load;
- restart: a graceful restart with outcomes in flight (lost = acknowledged, not logged);
- duplicates: each outcome sent twice at the same moment (duplicated = logged twice);
- fuzz: requests from hypothesis over the protos, and raw bytes (never UNKNOWN/INTERNAL);
- hot: one customer flooded with new event types; the others' p99 with and without;
- soak: a mixed load for a while; RSS and p99 per window; and through `arbiter serve` at
  150 calls/s open loop: p50, p99 and p99.9 per window and the server's collections.

tests/test_chaos.py runs every scenario small inside `make test`, asserting what each one
guarantees; docs/reliability.md gives the figures of a full run.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import grpc
import numpy as np
import redis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from arbiter.v1 import common_pb2, decision_pb2, decision_pb2_grpc, profile_pb2, profile_pb2_grpc
from benchmarks.common import black_hole, start_server
from common.errors import ConfigurationError
from common.ports import free_port
from engine.api.background import BackgroundServer
from engine.settings import ServerSettings, load_definitions
from feature_store.embedded import EmbeddedRedis
from feature_store.loader import load_profiles
from feature_store.log_reader import read_decisions, read_outcomes
from training.settings import TrainerSettings
from training.world import generate

CUSTOMERS = 2000
WEB = common_pb2.CHANNEL_WEB


@dataclass
class Tally:
    """Calls by status, degraded answers and latencies (microseconds)."""

    codes: Counter[str] = field(default_factory=Counter)
    degraded: int = 0
    reasons: Counter[str] = field(default_factory=Counter)  # of the degraded answers
    latencies: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, code: str, seconds: float, degraded: bool = False, reason: str = "") -> None:
        with self.lock:
            self.codes[code] += 1
            self.degraded += degraded
            if degraded:
                self.reasons[reason[:80]] += 1
            self.latencies.append(seconds * 1e6)

    def call(self, rpc: Callable[[], Any]) -> Any:
        """Runs ``rpc``, counting its status, latency and (for a Decide) degradation."""
        started = time.perf_counter()
        try:
            reply = rpc()
        except grpc.RpcError as exc:
            self.add(exc.code().name, time.perf_counter() - started)
            return None
        degraded = bool(getattr(reply, "degraded", False))
        reason = str(getattr(reply, "degraded_reason", ""))
        self.add("OK", time.perf_counter() - started, degraded, reason)
        return reply

    @property
    def calls(self) -> int:
        return sum(self.codes.values())

    @property
    def failed(self) -> int:
        return self.calls - self.codes["OK"]

    def p99(self) -> float:
        return float(np.percentile(self.latencies, 99)) if self.latencies else 0.0

    def __str__(self) -> str:
        codes = ", ".join(f"{k} {v}" for k, v in sorted(self.codes.items()))
        why = f" {dict(self.reasons)}" if self.reasons else ""
        return (
            f"{self.calls} calls ({codes}), {self.degraded} degraded{why}, p99 {self.p99():.0f} us"
        )


def rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@contextmanager
def world(data_dir: Path, **overrides: object) -> Iterator[tuple[BackgroundServer, EmbeddedRedis]]:
    """A Redis of its own holding the test world, and a server on it (value-only model)."""
    server_redis = EmbeddedRedis().start()
    settings = ServerSettings(data_dir=data_dir, port=0, **overrides)  # type: ignore[arg-type]
    client = redis.Redis.from_url(server_redis.url)
    load_profiles(client, load_definitions(settings).schema, generate(CUSTOMERS, 7).profiles())
    client.close()
    server = BackgroundServer(settings, server_redis.url)
    try:
        yield server, server_redis
    finally:
        server.stop()
        server_redis.stop()


def rss_of(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@contextmanager
def served_world(data_dir: Path) -> Iterator[tuple[grpc.Channel, int]]:
    """The test world served by `arbiter serve` in a process of its own, so that its
    memory is measured apart from the callers': a channel to it and its pid."""
    port = free_port()
    with world(data_dir) as (_, own):
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("ARBITER_", "REDIS"))},
            "REDIS_URL": own.url,
            "ARBITER_DATA_DIR": str(data_dir),
            "ARBITER_METRICS_PORT": str(free_port()),
        }
        process = subprocess.Popen(
            # One worker: the pid measured is the process that serves.
            [sys.executable, "-m", "training.cli", "serve", "--port", str(port), "--workers", "1"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        try:
            grpc.channel_ready_future(channel).result(timeout=60)
            yield channel, process.pid
        finally:
            channel.close()
            process.terminate()
            process.wait(timeout=30)


def decide(server: BackgroundServer, n: int, tally: Tally, customer: str = "") -> None:
    request = decision_pb2.DecideRequest(
        customer_id=customer or f"cust-{1 + n % CUSTOMERS:06d}", channel=WEB
    )
    tally.call(lambda: server.decisions.Decide(request, timeout=2))


def load(call: Callable[[int], None], seconds: float, threads: int = 4) -> None:
    """``call(n)`` from ``threads`` threads until ``seconds`` pass (bounded)."""
    stop = time.monotonic() + seconds

    def loop(offset: int) -> None:
        n = offset
        while time.monotonic() < stop:
            call(n)
            n += threads

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


@dataclass
class RedisFaults:
    tally: Tally
    recovered_after: float  # seconds from the restart to the first full answer


def redis_faults(data_dir: Path, seconds: float = 6.0) -> RedisFaults:
    """Paused at 0.5 s for 1 s, killed at 2 s, back at 2.5 s; the load runs ``seconds``
    (at least 4)."""
    seconds = max(seconds, 4.0)
    with world(data_dir, breaker_seconds=0.3) as (server, own):
        tally = Tally()
        first_full: list[float] = []
        restarted = [0.0]

        def call(n: int) -> None:
            before = tally.calls - tally.degraded
            decide(server, n, tally)
            if restarted[0] and not first_full and tally.calls - tally.degraded > before:
                first_full.append(time.monotonic() - restarted[0])

        def faults() -> None:
            client = redis.Redis.from_url(own.url)
            time.sleep(0.5)
            client.client_pause(1000)  # 0.5 s to 1.5 s: paused
            client.close()
            time.sleep(1.5)
            own.stop()  # 2 s: killed, back half a second later
            time.sleep(0.5)
            for _ in range(50):  # the port can stay busy for a moment after a kill
                try:
                    own.start()
                    break
                except ConfigurationError:
                    time.sleep(0.1)
            restarted[0] = time.monotonic()

        # The faults come from this thread: a redis-server dies with the thread that
        # started it (PR_SET_PDEATHSIG), so the restart must not happen in a short one.
        traffic = threading.Thread(target=load, args=(call, seconds))
        traffic.start()
        faults()
        traffic.join()
        return RedisFaults(tally, first_full[0] if first_full else float("inf"))


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
        _train(settings)
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
            process.terminate()
            process.wait(60)


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


def _train(settings: ServerSettings) -> None:
    """A small trained model with compiled trees, promoted in ``settings``' model folder."""
    from dataclasses import replace

    from engine.adapters import artifact, compiled
    from training.synthetic_logs import simulate_logs
    from training.train import train

    definitions = load_definitions(settings)
    logs = simulate_logs(
        generate(CUSTOMERS, 7),
        definitions.schema,
        definitions.catalog,
        definitions.stage_rules,
        rows=10_000,
    )
    trained = train(logs, definitions.schema, definitions.catalog, TrainerSettings(num_trees=60))
    folder = artifact.save(settings.model_dir, trained)
    compiled.compile_artifact(replace(trained, folder=folder))


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


@dataclass
class Restart:
    acknowledged: int
    lost: int
    duplicated: int
    refused_during_restart: int


def restart(data_dir: Path, outcomes: int = 300) -> Restart:
    """Outcomes sent from 4 threads while the server restarts gracefully halfway."""
    with world(data_dir) as (first, own):
        decisions = [
            first.decisions.Decide(
                decision_pb2.DecideRequest(customer_id=f"cust-{1 + n:06d}", channel=WEB),
                timeout=5,
            )
            for n in range(outcomes)
        ]
        servers = [first]
        acknowledged: set[str] = set()
        refused = Counter[str]()
        lock = threading.Lock()

        def report(n: int) -> None:
            d = decisions[n]
            request = decision_pb2.ReportOutcomeRequest(
                decision_id=d.decision_id,
                customer_id=d.customer_id,
                offer_id=d.actions[0].offer_id,
                outcome=common_pb2.OUTCOME_IMPRESSION,
            )
            time.sleep(0.002)  # a steady stream, so the restart falls in the middle of it
            while True:  # a client retries what was not acknowledged
                try:
                    servers[-1].decisions.ReportOutcome(request, timeout=2)
                    with lock:
                        acknowledged.add(d.decision_id)
                    return
                except grpc.RpcError as exc:
                    with lock:
                        refused[exc.code().name] += 1
                    time.sleep(0.02)
                except ValueError:  # the old server's channel closed under us: go again
                    time.sleep(0.02)

        def restarter() -> None:
            time.sleep(0.15)
            old = servers[-1]
            old.stop()  # health NOT_SERVING, in-flight calls finish, the log is flushed
            servers.append(BackgroundServer(first.settings, own.url))

        chaos = threading.Thread(target=restarter)
        chaos.start()
        queue = iter(range(outcomes))

        def drain() -> None:
            for n in queue:  # the iterator is shared: each outcome is sent by one thread
                report(n)

        threads = [threading.Thread(target=drain) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        chaos.join()
        logged = read_outcomes(redis.Redis.from_url(own.url))
        keys = Counter(o["decision_id"] for o in logged)
        servers[-1].stop()
        servers.remove(servers[-1])
        return Restart(
            acknowledged=len(acknowledged),
            lost=len(acknowledged - set(keys)),
            duplicated=sum(n - 1 for n in keys.values()),
            refused_during_restart=sum(refused.values()),
        )


def send_at_once(
    server: BackgroundServer,
    request: decision_pb2.ReportOutcomeRequest,
    barrier: threading.Barrier,
    answers: list[bool],
) -> None:
    barrier.wait()
    answers.append(server.decisions.ReportOutcome(request, timeout=5).recorded)


@dataclass
class Duplicates:
    keys: int
    recorded_twice: int  # both calls answered recorded=true
    logged_twice: int


def duplicates(data_dir: Path, keys: int = 100) -> Duplicates:
    with world(data_dir) as (server, own):
        both = 0
        for n in range(keys):
            d = server.decisions.Decide(
                decision_pb2.DecideRequest(customer_id=f"cust-{1 + n:06d}", channel=WEB),
                timeout=5,
            )
            request = decision_pb2.ReportOutcomeRequest(
                decision_id=d.decision_id,
                customer_id=d.customer_id,
                offer_id=d.actions[0].offer_id,
                outcome=common_pb2.OUTCOME_CLICK,
            )
            answers: list[bool] = []
            barrier = threading.Barrier(2)
            pair = [
                threading.Thread(target=send_at_once, args=(server, request, barrier, answers))
                for _ in range(2)
            ]
            for t in pair:
                t.start()
            for t in pair:
                t.join()
            both += all(answers)
        logged = Counter(o["idempotency_key"] for o in read_outcomes(redis.Redis.from_url(own.url)))
        return Duplicates(keys, both, sum(n - 1 for n in logged.values()))


text = st.text(max_size=80)
DECIDE = st.builds(
    decision_pb2.DecideRequest,
    customer_id=text,
    channel=st.integers(0, 7),
    placement=text,
    context=st.dictionaries(text, text, max_size=5),
    limit=st.integers(-(2**31), 2**31 - 1),
    offer_ids=st.lists(text, max_size=5),
    explain=st.booleans(),
)
OUTCOME = st.builds(
    decision_pb2.ReportOutcomeRequest,
    decision_id=text,
    customer_id=text,
    offer_id=st.sampled_from(["fibre_broadband", "ghost", ""]) | text,
    outcome=st.integers(0, 8),
    value=st.floats(allow_nan=True, allow_infinity=True),
    idempotency_key=text,
)
EVENT = st.builds(
    profile_pb2.RecordEventRequest,
    customer_id=text,
    channel=st.integers(0, 7),
    event_type=text,
    attributes=st.dictionaries(text, text, max_size=5),
)
PROFILE = st.builds(profile_pb2.GetProfileRequest, customer_id=text)
METHODS = {
    "Decide": "/arbiter.v1.DecisionService/Decide",
    "ReportOutcome": "/arbiter.v1.DecisionService/ReportOutcome",
    "RecordEvent": "/arbiter.v1.ProfileService/RecordEvent",
    "GetProfile": "/arbiter.v1.ProfileService/GetProfile",
}
CASES = st.one_of(
    st.tuples(st.just("Decide"), DECIDE.map(lambda m: m.SerializeToString())),
    st.tuples(st.just("ReportOutcome"), OUTCOME.map(lambda m: m.SerializeToString())),
    st.tuples(st.just("RecordEvent"), EVENT.map(lambda m: m.SerializeToString())),
    st.tuples(st.just("GetProfile"), PROFILE.map(lambda m: m.SerializeToString())),
    st.tuples(st.sampled_from(list(METHODS)), st.binary(max_size=300)),
)


@dataclass
class Fuzz:
    tally: Tally
    rss_before_mb: float
    rss_after_mb: float
    still_serving: bool


def fuzz(data_dir: Path, examples: int = 1000) -> Fuzz:
    """Fuzzed calls to `arbiter serve` in its own process; its RSS before and after."""
    with served_world(data_dir) as (channel, pid):
        calls = {n: channel.unary_unary(path, None, None) for n, path in METHODS.items()}
        tally = Tally()
        for n in range(200):  # warm the server up before the first measure
            warm = decision_pb2.DecideRequest(customer_id=f"cust-{1 + n:06d}", channel=WEB)
            calls["Decide"](warm.SerializeToString(), timeout=5)
        before = rss_of(pid)

        @settings(
            max_examples=examples,
            database=None,
            deadline=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(CASES)
        def send(case: tuple[str, bytes]) -> None:
            tally.call(lambda: calls[case[0]](case[1], timeout=5))

        send()
        after = rss_of(pid)
        probe = decision_pb2.DecideRequest(customer_id="cust-001999", channel=WEB)
        reply = decision_pb2.DecideResponse.FromString(
            calls["Decide"](probe.SerializeToString(), timeout=5)
        )
        return Fuzz(tally, before, after, bool(reply.actions) and not reply.degraded)


@dataclass
class Hot:
    quiet: Tally  # others, before
    flood: Tally  # the flood of made-up events for one customer
    after: Tally  # others, after the flood, with the hot customer deciding too
    hot_fields: int  # the hot customer's real-time and window fields after the flood


def paced(call: Callable[[int], None], per_second: float, seconds: float) -> None:
    """``call(n)`` at a steady rate from one thread (what a site's traffic looks like)."""
    started = time.monotonic()
    n = 0
    while (elapsed := time.monotonic() - started) < seconds:
        call(n)
        n += 1
        time.sleep(max(0.0, n / per_second - elapsed))


def hot(data_dir: Path, seconds: float = 5.0, events: int = 5000) -> Hot:
    """As the issue found it: 5,000 events with new types and categories for one customer,
    then others at 100 decisions a second while the hot customer is decided for too."""
    with world(data_dir) as (server, own):
        quiet, flood, after = Tally(), Tally(), Tally()
        paced(lambda n: decide(server, n, quiet), 100, seconds)
        for n in range(events):
            request = profile_pb2.RecordEventRequest(
                customer_id="cust-000007",
                channel=WEB,
                event_type=f"made_up_{n}",
                attributes={"category": f"category-{n}"},
            )
            flood.call(functools.partial(server.profiles.RecordEvent, request, timeout=5))

        def mixed(n: int) -> None:
            decide(server, n, after)
            if n % 10 == 0:
                decide(server, n, Tally(), customer="cust-000007")

        paced(mixed, 100, seconds)
        client = redis.Redis.from_url(own.url)
        fields = sum(client.hlen(f"arb:{{cust-000007}}:{k}") for k in ("rt", "win", "session"))
        client.close()
        return Hot(quiet, flood, after, fields)


@dataclass
class SoakWindow:
    seconds: float
    tally: Tally
    rss_mb: float


def soak(data_dir: Path, seconds: float = 20.0, window: float = 5.0) -> list[SoakWindow]:
    with world(data_dir) as (server, _):
        windows = []
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            tally = Tally()

            def mixed(n: int, tally: Tally = tally) -> None:
                decide(server, n, tally)
                if n % 5 == 0:
                    request = profile_pb2.RecordEventRequest(
                        customer_id=f"cust-{1 + n % CUSTOMERS:06d}",
                        channel=WEB,
                        event_type="page_view",
                    )
                    server.profiles.RecordEvent(request, timeout=5)

            load(mixed, window)
            windows.append(SoakWindow(time.monotonic() - started, tally, rss_mb()))
        return windows


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
        _train(settings)
        victim = _Primary(cluster.primaries()[0])
        log_path = data_dir / "serve.log"
        with _serving(settings, cluster.url, workers, tree, log_path, breaker_seconds=0.2) as call:
            probe = _open_loop(call, victim, seconds, kill_at, seconds + 1, rate, deadline)
        logged_ids = Counter(d["decision_id"] for d in read_decisions(client))
        client.close()
    logging.getLogger().removeHandler(records)
    text = log_path.read_text(errors="replace").splitlines() if workers else []
    return _outage(probe, probe.killed_at, records, logged_ids, text)


@dataclass
class ServedWindow:
    seconds: float
    calls: int
    failed: int
    p50_ms: float
    p99_ms: float
    p999_ms: float
    slow: int  # calls over the window's p99
    slow_in_gc: int  # of those, how many were in flight while the server collected


@dataclass
class Collections:
    """The server's garbage collections over a run, as benchmarks/gc_watch saw them:
    (wall-clock start, generation, seconds) each."""

    seen: list[tuple[float, int, float]]

    def __str__(self) -> str:
        parts = []
        for generation in range(3):
            took = [s * 1000 for _, g, s in self.seen if g == generation]
            if took:
                parts.append(
                    f"gen{generation} {len(took)} (mean {np.mean(took):.2f} ms,"
                    f" max {max(took):.1f} ms)"
                )
            else:
                parts.append(f"gen{generation} 0")
        return ", ".join(parts)

    def during(self, start: float, end: float) -> bool:
        """Whether a collection ran at some moment between ``start`` and ``end``."""
        return any(at < end and at + took > start for at, _, took in self.seen)


GC_WATCH = Path(__file__).parent / "gc_watch"


def served_soak(
    data_dir: Path,
    *,
    seconds: float = 60.0,
    window: float = 10.0,
    rate: float = 150.0,
    tree: Path | None = None,
    freeze: bool = True,
    demo: bool = False,
) -> tuple[list[ServedWindow], Collections]:
    """`arbiter serve` (one worker, a trained model) in its own process under ``rate``
    Decide/s open loop (one RecordEvent in five calls), latency per ``window`` seconds;
    and the server's garbage collections over the run (benchmarks/gc_watch: every one
    timed, whatever the server's code), to tell whether the slowest calls are theirs.
    ``tree``: the server's code from another checkout; ``freeze=False``: the server
    without its start-up ``gc.freeze()``; ``demo``: `arbiter serve --demo` as a user
    starts it (the server loads the 50,000 demo customers and, the first time in
    ``data_dir``, trains the demo model), else this world and a small model."""
    own = EmbeddedRedis().start()
    settings = ServerSettings(data_dir=data_dir, port=0)
    customers = TrainerSettings().demo_customers if demo else CUSTOMERS
    if not demo:
        client = redis.Redis.from_url(own.url)
        load_profiles(client, load_definitions(settings).schema, generate(CUSTOMERS, 7).profiles())
        client.close()
        _train(settings)
    port = free_port()
    served = settings.model_copy(update={"redis_url": own.url})
    data_dir.mkdir(parents=True, exist_ok=True)
    gc_log = data_dir / "gc"
    windows = []
    with (data_dir / "serve.log").open("wb") as log:
        process = start_server(
            served,
            port,
            1,
            log=log,
            tree=tree,
            pythonpath=[GC_WATCH],
            demo=demo,
            bench_gc_log=str(gc_log),  # ARBITER_BENCH_GC_LOG, read by gc_watch
            bench_gc_freeze="on" if freeze else "off",
        )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            decide = decision_pb2_grpc.DecisionServiceStub(channel).Decide
            event = profile_pb2_grpc.ProfileServiceStub(channel).RecordEvent
            started, began = time.monotonic(), time.time()
            n = 0
            while time.monotonic() - started < seconds:
                calls: list[tuple[float, float, str]] = []  # (sent, ended, code), wall clock
                lock = threading.Lock()

                def done(
                    future: Any,
                    sent: float,
                    calls: list[tuple[float, float, str]] = calls,
                    lock: threading.Lock = lock,
                ) -> None:
                    ended = time.time()
                    code = "OK" if future.exception() is None else future.code().name
                    with lock:
                        calls.append((sent, ended, code))

                futures = []
                begun = time.monotonic()
                i = 0
                while (time.monotonic() - begun) < window:
                    customer = f"cust-{1 + n * 7919 % customers:06d}"
                    call: Any
                    if n % 5 == 4:
                        call = event.future(
                            profile_pb2.RecordEventRequest(
                                customer_id=customer, channel=WEB, event_type="page_view"
                            ),
                            timeout=2,
                        )
                    else:
                        call = decide.future(
                            decision_pb2.DecideRequest(customer_id=customer, channel=WEB),
                            timeout=2,
                        )
                    call.add_done_callback(functools.partial(done, sent=time.time()))
                    futures.append(call)
                    n += 1
                    i += 1
                    time.sleep(max(0.0, begun + i / rate - time.monotonic()))
                for f in futures:
                    with contextlib.suppress(grpc.RpcError, grpc.FutureCancelledError):
                        f.result(timeout=5)
                windows.append((time.monotonic() - started, calls))
    finally:
        process.terminate()
        process.wait(60)
        own.stop()
    collections = _collections(gc_log, process.pid, began, time.time())
    return [_window(at, calls, collections) for at, calls in windows], collections


def _collections(gc_log: Path, pid: int, begun: float, ended: float) -> Collections:
    """The collections process ``pid`` logged between ``begun`` and ``ended`` (wall
    clock): those under load, not those of its start-up."""
    path = gc_log.with_name(f"{gc_log.name}.{pid}")
    seen = []
    for line in path.read_text().splitlines():
        at, generation, took = line.split()
        if begun <= float(at) <= ended:
            seen.append((float(at), int(generation), float(took)))
    return Collections(seen)


def _window(
    at: float, calls: list[tuple[float, float, str]], collections: Collections
) -> ServedWindow:
    latencies = np.array([(ended - sent) * 1000 for sent, ended, _ in calls])
    p50, p99, p999 = np.percentile(latencies, [50, 99, 99.9])
    slow = [(sent, ended) for sent, ended, _ in calls if (ended - sent) * 1000 > p99]
    return ServedWindow(
        seconds=at,
        calls=len(calls),
        failed=sum(code != "OK" for _, _, code in calls),
        p50_ms=float(p50),
        p99_ms=float(p99),
        p999_ms=float(p999),
        slow=len(slow),
        slow_in_gc=sum(collections.during(sent, ended) for sent, ended in slow),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fuzz", type=int, default=100_000)
    parser.add_argument("--soak-seconds", type=float, default=120.0)
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--data", type=Path, default=Path("var/chaos"))
    parser.add_argument(
        "--before",
        type=Path,
        help="a checkout of an earlier commit, its code generated (make protos): the outages"
        " and the soak served by it too, in the same run",
    )
    args = parser.parse_args()
    print(
        f"RSS at start {rss_mb():.0f} MB (max so far {resource.getrusage(0).ru_maxrss / 1024:.0f})"
    )

    checkouts: list[tuple[str, Path | None]] = [("now", None)]
    if args.before is not None:
        checkouts.insert(0, ("before", args.before.resolve()))
    outages: dict[str, Callable[..., Outage]] = {
        "killed, port refusing": functools.partial(kill_restart, workers=2, model=True),
        "killed, port black-holed": functools.partial(
            kill_restart, workers=2, model=True, blackhole=True
        ),
        "killed, restarted empty": functools.partial(
            kill_restart, workers=2, model=True, empty=True
        ),
        "cluster primary killed": functools.partial(primary_killed, workers=2),
    }
    print(
        "\nRedis killed at 7 s and back at 12 s (a cluster's primary killed at 3 s of 10),"
        " 150 Decide/s open loop with a 200 ms deadline, `arbiter serve --workers 2`:"
    )
    print(
        "| scenario | code | calls | errors | worst | p99 | degraded | seconds to full answers"
        " | log lost / doubled | tracebacks |"
    )
    said: list[str] = []
    for name, run in outages.items():
        for code, tree in checkouts:
            o = run(args.data / f"{name.replace(',', '').replace(' ', '-')}-{code}", tree=tree)
            print(o.row(f"{name} | {code}"), flush=True)
            said += [f"  {name}, {code}:"] + [f"    {line}" for line in o.warnings[:12]]
    print("\nwhat the servers logged:", *said, sep="\n")
    faults = redis_faults(args.data / "redis")
    print(f"\nredis paused 1 s, then killed and restarted: {faults.tally}")
    print(f"  full answers again {faults.recovered_after:.2f} s after the restart")
    r = restart(args.data / "restart")
    print(
        f"\ngraceful restart with outcomes in flight: {r.acknowledged} acknowledged,"
        f" {r.lost} lost, {r.duplicated} logged twice, {r.refused_during_restart} refused"
        " during the restart (retried)"
    )
    d = duplicates(args.data / "duplicates")
    print(
        f"\nthe same outcome twice at once: {d.keys} keys, {d.recorded_twice} recorded twice,"
        f" {d.logged_twice} logged twice"
    )
    f = fuzz(args.data / "fuzz", args.fuzz)
    print(f"\nfuzz: {f.tally}")
    print(
        f"  RSS {f.rss_before_mb:.0f} -> {f.rss_after_mb:.0f} MB; still serving: {f.still_serving}"
    )
    h = hot(args.data / "hot")
    print(f"\nhot customer: others at 100/s before the flood: {h.quiet}")
    print(f"  the flood, 5,000 made-up event types for one customer: {h.flood}")
    print(f"  the hot customer's real-time fields after it: {h.hot_fields}")
    print(f"  others at 100/s after it, the hot customer deciding too: {h.after}")
    print(f"  others' p99 after / before: x{h.after.p99() / max(h.quiet.p99(), 1):.2f}")
    soaks: list[tuple[str, Path | None, bool]] = [
        *((code, tree, True) for code, tree in checkouts[:-1]),
        ("now without gc.freeze", None, False),
        ("now", None, True),
    ]
    for code, tree, freeze in soaks:
        windows, collections = served_soak(
            args.data / f"served-soak-{code.replace(' ', '-')}",
            seconds=args.soak_seconds,
            window=args.window,
            tree=tree,
            freeze=freeze,
            demo=True,
        )
        print(
            f"\nsoak through arbiter serve --demo ({code}, one worker), 150 calls/s open loop,"
            f" {args.soak_seconds:g} s in windows of {args.window:g} s:"
        )
        for sw in windows:
            print(
                f"  {sw.seconds:6.1f} s  {sw.calls} calls, {sw.failed} failed, p50"
                f" {sw.p50_ms:.1f} ms, p99 {sw.p99_ms:.1f} ms, p99.9 {sw.p999_ms:.1f} ms;"
                f" of the {sw.slow} calls over p99, {sw.slow_in_gc} met a collection"
            )
        print(f"  the server's garbage collections: {collections}", flush=True)
    print(f"\nsoak, {args.soak_seconds:g} s in windows of {args.window:g} s:")
    for w in soak(args.data / "soak", args.soak_seconds, args.window):
        print(f"  {w.seconds:6.1f} s  RSS {w.rss_mb:5.0f} MB  {w.tally}")


if __name__ == "__main__":
    main()
