"""grpc.aio versus the threaded grpc server: for an echo RPC and for Decide.

Each server runs in its own process; one client measures sequential latency, then an
asyncio client with 16 calls in flight measures throughput. Interleaved rounds.

- echo: the health Check on a bare server of each kind;
- decide: the same DecisionCore (100 eligible offers, 100-tree model, no caps) behind
  each stack: aio with the asyncio Redis client (Arbiter's service), threaded with the
  sync client (8 worker threads), both reading with the same script. Neither writes the
  decision log nor reserves contacts, so only the stacks differ.

    .venv/bin/python -m benchmarks.bench_server_stack
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import grpc
import redis
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]

from arbiter.v1 import decision_pb2_grpc
from benchmarks.bench_decide import prepare, request, throughput
from benchmarks.common import benchmark_redis, percentiles
from common.ports import free_port
from engine.api.server import start_server
from engine.api.servicer import decode_decide, encode_decision
from engine.core.customer import OutcomeEffects
from engine.core.decision_id import DecisionIds
from engine.service.application import Application
from engine.service.decision_log import DecisionLogWriter
from engine.service.reloader import build_core, load_scorer
from engine.settings import ServerSettings, load_definitions
from feature_store import keys, redis_client, redis_store, scripts
from feature_store.redis_store import READ_KEYS
from feature_store.store import Forgotten, LoggedDecision, OutcomeRecord


class NullLog:
    """The decision log, left out: the benchmark compares server stacks, not logging."""

    async def append_decisions(self, decisions: Sequence[LoggedDecision]) -> None:
        return None

    async def record_outcome(
        self, outcome: OutcomeRecord, effects: OutcomeEffects
    ) -> tuple[bool, str]:
        return False, "not logged"

    async def read_decisions(self) -> list[Any]:
        return []

    async def read_outcomes(self) -> list[Any]:
        return []

    async def forget(self, customer_id: str) -> Forgotten:
        return Forgotten()


class NoLogWriter(DecisionLogWriter):
    def submit(self, decision: Any, request: Any, now: float) -> None:
        return None


def echo_threaded(port: int) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


def echo_aio(port: int) -> None:
    async def main() -> None:
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(health_aio.HealthServicer(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    asyncio.run(main())


def decide_aio(port: int, settings: ServerSettings) -> None:
    async def main() -> None:
        definitions = load_definitions(settings)
        core = build_core(
            definitions, load_scorer(settings.model_dir, definitions.schema), settings
        )
        client = redis_client.connect(settings.redis_url or "")
        store = redis_store.RedisFeatureStore(client, definitions.schema)
        writer = NoLogWriter(NullLog(), definitions.schema.names)
        ids = DecisionIds([secrets.token_bytes(32)])
        application = Application(core, store, writer, ids=ids)
        running = await start_server(application, "127.0.0.1", port)
        await running.server.wait_for_termination()

    asyncio.run(main())


def decide_threaded(port: int, settings: ServerSettings) -> None:
    definitions = load_definitions(settings)
    core = build_core(definitions, load_scorer(settings.model_dir, definitions.schema), settings)
    client = redis.Redis.from_url(settings.redis_url or "", socket_timeout=0.25)
    read = client.register_script(scripts.READ)

    class Servicer(decision_pb2_grpc.DecisionServiceServicer):
        def Decide(self, req: Any, context: Any) -> Any:
            decoded = decode_decide(req)
            now = time.time()
            script_keys = [keys.customer_key(decoded.customer_id, k) for k in READ_KEYS]
            reply = read(keys=script_keys, args=[now, now - 30 * 86400])
            record = redis_store.decode_fetch(definitions.schema, decoded.customer_id, reply)
            return encode_decision(core.decide(decoded, record, now))

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    # Only Decide is compared; the other methods answer UNIMPLEMENTED (the base class's).
    decision_pb2_grpc.add_DecisionServiceServicer_to_server(Servicer(), server)  # type: ignore[abstract]
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


def call_factory(port: int, decide: bool) -> tuple[grpc.Channel, Callable[[int], Any]]:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    if decide:
        stub = decision_pb2_grpc.DecisionServiceStub(channel)
        return channel, lambda i: stub.Decide(request(i, 3))
    check = health_pb2_grpc.HealthStub(channel).Check
    return channel, lambda i: check(health_pb2.HealthCheckRequest())


def latency(port: int, calls: int, decide: bool) -> list[float]:
    channel, call = call_factory(port, decide)
    for i in range(200):
        call(i)
    samples = []
    for i in range(calls):
        t = time.perf_counter()
        call(i)
        samples.append((time.perf_counter() - t) * 1e6)
    channel.close()
    return samples


def compare(
    title: str, targets: dict[str, tuple[Callable[..., None], tuple[Any, ...]]], decide: bool
) -> None:
    servers = {}
    for name, (target, extra) in targets.items():
        port = free_port()
        # spawn, not fork: a forked child inherits the parent's gRPC state and hangs.
        process = multiprocessing.get_context("spawn").Process(
            target=target, args=(port, *extra), daemon=True
        )
        process.start()
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=60)
        servers[name] = (port, process)
    samples: dict[str, list[float]] = {name: [] for name in servers}
    rates: dict[str, list[float]] = {name: [] for name in servers}
    for _ in range(3):
        for name, (port, _) in servers.items():
            samples[name] += latency(port, 700, decide)
            rates[name].append(asyncio.run(throughput(port, 2.0, 16, 3, echo=not decide)))
    print(title)
    for name in servers:
        rate = statistics.median(rates[name])
        print(f"  {name:9s} {percentiles(samples[name])}  {rate:6.0f} calls/s")
    for _, process in servers.values():
        process.terminate()
        process.join()


def main() -> None:
    compare("echo (health Check):", {"aio": (echo_aio, ()), "threaded": (echo_threaded, ())}, False)
    with benchmark_redis() as redis_url, tempfile.TemporaryDirectory() as tmp:
        settings = prepare(Path(tmp), redis_url, 100, 100, caps=False)
        compare(
            "Decide (100 candidates, no decision log):",
            {"aio": (decide_aio, (settings,)), "threaded": (decide_threaded, (settings,))},
            True,
        )


if __name__ == "__main__":
    main()
