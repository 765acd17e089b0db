"""Decide latency and throughput against an echo RPC on the same server stack.

One run, interleaved, on this machine:
- the server runs in its own process (`arbiter serve`), with a catalog of 100 offers that
  are all eligible, a 100-tree model, and profiles in a real redis-server;
- latency: sequential calls from one client, Decide and the health Check (the "echo":
  same server, interceptors and event loop, no work), interleaved in blocks;
- throughput: an asyncio client keeps 16 calls in flight for a few seconds each;
- in-process: the time of each decision stage inside the service, without gRPC.

    make bench            (or: .venv/bin/python -m benchmarks.bench_decide --help)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import grpc
import lightgbm as lgb
import lleaves
import numpy as np
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from arbiter.v1 import common_pb2, decision_pb2, decision_pb2_grpc
from benchmarks.common import benchmark_redis, percentiles, start_server, wide_catalog
from common.ports import free_port
from engine.adapters import artifact, compiled
from engine.adapters.lightgbm_scorer import LightGBMScorer
from engine.api.server import build_application, redis_store_for
from engine.api.servicer import encode_decision
from engine.core.decision import DecisionRequest
from engine.core.timing import StageTimer
from engine.settings import ServerSettings, load_definitions
from feature_store.loader import load_profiles
from training.settings import TrainerSettings
from training.synthetic_logs import simulate_logs
from training.train import train
from training.world import generate

CUSTOMERS = 5000


def prepare(
    workdir: Path, redis_url: str, offers: int, trees: int, *, caps: bool = True
) -> ServerSettings:
    catalog = wide_catalog(offers, workdir / "catalog.toml", caps=caps)
    settings = ServerSettings(data_dir=workdir, catalog_path=catalog, redis_url=redis_url)
    definitions = load_definitions(settings)
    world = generate(CUSTOMERS, seed=7)
    client = redis.Redis.from_url(redis_url)
    load_profiles(client, definitions.schema, world.profiles())
    client.close()
    logs = simulate_logs(
        world, definitions.schema, definitions.catalog, definitions.stage_rules, rows=30_000
    )
    model = train(logs, definitions.schema, definitions.catalog, TrainerSettings(num_trees=trees))
    folder = artifact.save(settings.model_dir, model)
    done = compiled.compile_artifact(replace(model, folder=folder))  # as training does
    print(
        f"catalog {offers} offers, model {trees} trees (compiled in {done.seconds:.0f} s),"
        f" {CUSTOMERS} customers loaded"
    )
    return settings


def scoring(settings: ServerSettings, calls: int) -> None:
    """The scorer as served against LightGBM and lleaves called directly, on the same
    request-shaped matrices (one decision's candidates), interleaved."""
    model = artifact.load(settings.model_dir)
    served = LightGBMScorer(model)
    booster = lgb.Booster(model_str=model.model_text)
    raw = lleaves.Model(model_file=str(model.folder / "model.txt"))  # type: ignore[operator]
    raw.compile(cache=str(model.folder / compiled.OBJECT))  # type: ignore[operator]
    rows = np.asarray(model.check_rows)
    matrices = [rows[np.arange(i, i + 100) % len(rows)] for i in range(0, 200, 7)]
    runs: dict[str, Callable[[np.ndarray], object]] = {
        "served": served.predict,
        "lightgbm": lambda m: booster.predict(m, num_threads=1),
        "lleaves": lambda m: raw.predict(m, n_jobs=1),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(calls):
        for name, run in runs.items():
            m = matrices[i % len(matrices)]
            t = time.perf_counter()
            run(m)
            times[name].append((time.perf_counter() - t) * 1e6)
    p50 = {name: float(np.median(t)) for name, t in times.items()}
    print(f"\nscoring 100 candidates ({served.engine}), p50:")
    for name in runs:
        print(f"  {name:9s} {p50[name]:7.1f} us")
    print(
        f"  served / lleaves x{p50['served'] / p50['lleaves']:.2f} (target <= 1.3),"
        f" LightGBM / served x{p50['lightgbm'] / p50['served']:.1f}"
    )


def request(i: int, limit: int) -> decision_pb2.DecideRequest:
    return decision_pb2.DecideRequest(
        customer_id=f"cust-{1 + i % CUSTOMERS:06d}",
        channel=common_pb2.CHANNEL_WEB,
        placement="home_hero",
        limit=limit,
    )


def latency(port: int, calls: int, limit: int) -> tuple[list[float], list[float], int]:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    decide = decision_pb2_grpc.DecisionServiceStub(channel).Decide
    check = health_pb2_grpc.HealthStub(channel).Check
    echo_request = health_pb2.HealthCheckRequest()
    decide_us: list[float] = []
    echo_us: list[float] = []
    candidates = 0
    for i in range(200):  # warm-up
        decide(request(i, limit))
        check(echo_request)
    for block in range(calls // 100):
        for i in range(100):
            t = time.perf_counter()
            reply = decide(request(block * 100 + i, limit))
            decide_us.append((time.perf_counter() - t) * 1e6)
            candidates = max(candidates, len(reply.actions))
        for _ in range(100):
            t = time.perf_counter()
            check(echo_request)
            echo_us.append((time.perf_counter() - t) * 1e6)
    channel.close()
    return decide_us, echo_us, candidates


DEGRADED: list[int] = [0]  # degraded Decide answers seen by the throughput runs


async def throughput(port: int, seconds: float, concurrency: int, limit: int, echo: bool) -> float:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        decide = decision_pb2_grpc.DecisionServiceStub(channel).Decide
        check = health_pb2_grpc.HealthStub(channel).Check
        done = 0
        stop = time.perf_counter() + seconds

        async def worker(w: int) -> None:
            nonlocal done
            i = w
            while time.perf_counter() < stop:
                if echo:
                    await check(health_pb2.HealthCheckRequest())
                else:
                    reply = await decide(request(i, limit))
                    DEGRADED[0] += reply.degraded
                i += concurrency
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        return done / (time.perf_counter() - started)


async def stages(settings: ServerSettings, calls: int, limit: int) -> None:
    definitions = load_definitions(settings)
    store = redis_store_for(settings, settings.redis_url or "", definitions)
    application = build_application(settings, store, definitions)
    application.writer.start()
    timer = StageTimer()
    total_us: list[float] = []
    encode_us: list[float] = []
    bare_us: list[float] = []  # the same answers without their reason codes
    for i in range(calls):
        req = DecisionRequest(f"cust-{1 + i % CUSTOMERS:06d}", "web", "home_hero", limit=limit)
        t = time.perf_counter()
        decision = await application.decide(req, timer)
        t2 = time.perf_counter()
        encode_decision(decision).SerializeToString()
        t3 = time.perf_counter()
        total_us.append((t2 - t) * 1e6)
        encode_us.append((t3 - t2) * 1e6)
        bare = replace(decision, actions=tuple(replace(a, reasons=()) for a in decision.actions))
        t4 = time.perf_counter()
        encode_decision(bare).SerializeToString()
        bare_us.append((time.perf_counter() - t4) * 1e6)
    candidates = len(decision.candidates)
    await application.writer.close()
    await application.store.aclose()
    print(f"\nin-process, {candidates} candidates, mean per decision stage:")
    for stage, us in timer.totals.items():
        print(f"  {stage:12s} {us / calls:7.0f} us")
    print(f"  {'encode':12s} {np.mean(encode_us):7.0f} us")
    print(f"  service decide(): {percentiles(total_us)}")
    extra = np.median(encode_us) - np.median(bare_us)
    print(
        f"  reason codes on every action: encode p50 {np.median(encode_us):.1f} us with,"
        f" {np.median(bare_us):.1f} us without (+{extra:.1f} us for {limit} actions)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--offers", type=int, default=100)
    parser.add_argument("--trees", type=int, default=100)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--limit", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

    with benchmark_redis() as redis_url, tempfile.TemporaryDirectory() as tmp:
        settings = prepare(Path(tmp), redis_url, args.offers, args.trees)
        port = free_port()
        server = start_server(settings, port)
        try:
            decide_us, echo_us, actions = latency(port, args.calls, args.limit)
            print(f"\nlatency, one client, sequential ({actions} actions returned):")
            print(f"  Decide  {percentiles(decide_us)}")
            print(f"  echo    {percentiles(echo_us)}")
            ratio = np.percentile(decide_us, [50, 99]) / np.percentile(echo_us, [50, 99])
            print(f"  Decide / echo: p50 x{ratio[0]:.2f}, p99 x{ratio[1]:.2f}")
            rates = {}
            for name, echo in (("Decide", False), ("echo", True), ("Decide ", False)):
                rates[name] = asyncio.run(
                    throughput(port, args.seconds, args.concurrency, args.limit, echo)
                )
            print(f"\nthroughput, {args.concurrency} calls in flight:")
            for name, rate in rates.items():
                print(f"  {name.strip():7s} {rate:7.0f} calls/s")
            decide_rate = (rates["Decide"] + rates["Decide "]) / 2
            print(f"  Decide / echo: x{decide_rate / rates['echo']:.2f}")
            print(f"  degraded Decide answers under load: {DEGRADED[0]}")
        finally:
            server.terminate()
            server.wait(timeout=30)
        asyncio.run(stages(settings, args.calls, args.limit))
        scoring(settings, args.calls)


if __name__ == "__main__":
    main()
