"""What every chaos scenario shares: a world of customers on a real server and Redis, the
calls, a tally of what they got, and the loops that drive them.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import redis

from arbiter.v1 import common_pb2, decision_pb2
from benchmarks.common import stop_server
from common.ports import free_port
from engine.api.background import BackgroundServer
from engine.settings import ServerSettings, load_definitions
from feature_store.embedded import EmbeddedRedis
from feature_store.loader import load_profiles
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
            "ARBITER_OUTBOUND_RUN_SECONDS": "0",  # the demo's run sends at 10:00 London
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
            stop_server(process, 30)


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


def paced(call: Callable[[int], None], per_second: float, seconds: float) -> None:
    """``call(n)`` at a steady rate from one thread (what a site's traffic looks like)."""
    started = time.monotonic()
    n = 0
    while (elapsed := time.monotonic() - started) < seconds:
        call(n)
        n += 1
        time.sleep(max(0.0, n / per_second - elapsed))


def train_model(settings: ServerSettings) -> None:
    """A small trained model with compiled trees, promoted in ``settings``' model folder:
    trained and compiled once a process for the same definitions, then copied."""
    paths = (settings.features_path, settings.catalog_path, settings.lifecycle_path)
    shutil.copytree(_trained(*paths), settings.model_dir, dirs_exist_ok=True)


@functools.cache
def _trained(features: Path, catalog: Path, lifecycle: Path) -> Path:
    """A model folder holding a trained, compiled model for these definitions."""
    from dataclasses import replace

    from engine.adapters import artifact, compiled
    from training.synthetic_logs import simulate_logs
    from training.train import train

    settings = ServerSettings(
        features_path=features, catalog_path=catalog, lifecycle_path=lifecycle
    )
    definitions = load_definitions(settings)
    logs = simulate_logs(
        generate(CUSTOMERS, 7),
        definitions.schema,
        definitions.catalog,
        definitions.stage_rules,
        rows=10_000,
    )
    trained = train(logs, definitions.schema, definitions.catalog, TrainerSettings(num_trees=60))
    model_dir = Path(tempfile.mkdtemp(prefix="arbiter-chaos-model-"))
    atexit.register(shutil.rmtree, model_dir, ignore_errors=True)
    folder = artifact.save(model_dir, trained)
    compiled.compile_artifact(replace(trained, folder=folder))
    return model_dir
