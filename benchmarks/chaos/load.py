"""Load that lasts: one hot customer beside the others, and soaks (in-process, and
through `arbiter serve` at an open-loop rate) with memory and latency per window.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import redis

from arbiter.v1 import decision_pb2, decision_pb2_grpc, profile_pb2, profile_pb2_grpc
from benchmarks.chaos.harness import (
    CUSTOMERS,
    WEB,
    Tally,
    decide,
    load,
    paced,
    rss_mb,
    train_model,
    world,
)
from benchmarks.common import start_server, stop_server
from common.ports import free_port
from engine.settings import ServerSettings, load_definitions
from feature_store.embedded import EmbeddedRedis
from feature_store.loader import load_profiles
from training.settings import TrainerSettings
from training.world import generate


@dataclass
class Hot:
    quiet: Tally  # others, before
    flood: Tally  # the flood of made-up events for one customer
    after: Tally  # others, after the flood, with the hot customer deciding too
    hot_fields: int  # the hot customer's real-time and window fields after the flood


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


GC_WATCH = Path(__file__).parent.parent / "gc_watch"


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
        train_model(settings)
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
        try:
            stop_server(process, 60, data_dir / "serve.log")
        finally:
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
