"""Closed-loop load against `arbiter serve`, Decide against the same server's Health/Check,
with 1 and then 2 worker processes.

The shape of the issue's measurement: the demo catalog, limit 3, every call a different
demo customer, client processes outside the server each keeping a few connections busy
(one call in flight per connection), phases of a few seconds alternating Health/Check and
Decide. Printed per phase: p50/p90/p99 and calls/s; then the ratios the targets are
stated in (Decide p99 / Check p99, Decide calls/s / Check calls/s) and 2 workers vs 1.

    .venv/bin/python -m benchmarks.bench_load [--seconds 5] [--clients 2] [--connections 4]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import tempfile
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from arbiter.v1 import (
    common_pb2,
    decision_pb2,
    decision_pb2_grpc,
    profile_pb2,
    profile_pb2_grpc,
)
from benchmarks.bench_scaling import measure
from benchmarks.common import benchmark_redis, flush, start_server
from common.ports import free_port
from engine.adapters import artifact, compiled
from engine.core.timing import StageTimer
from engine.settings import ServerSettings, load_definitions
from feature_store.loader import load_file
from feature_store.redis_client import connect_sync
from training.settings import TrainerSettings
from training.synthetic_logs import simulate_logs
from training.train import train
from training.world import generate

CUSTOMERS = 50_000


def prepare(workdir: Path, redis_url: str) -> ServerSettings:
    """The demo world in Redis and a compiled demo model (150 trees), as `make run`."""
    settings = ServerSettings(data_dir=workdir, redis_url=redis_url)
    definitions = load_definitions(settings)
    world = generate(CUSTOMERS, seed=7)
    client = connect_sync(redis_url)
    flush(client)
    profiles = workdir / "profiles.jsonl"
    world.write_profiles(profiles)
    report = load_file(client, definitions.schema, profiles)  # as `arbiter load` does
    print(f"bulk load: {report.rows_per_second:,.0f} profiles/s (target >= 100,000)")
    client.close()
    logs = simulate_logs(
        world, definitions.schema, definitions.catalog, definitions.stage_rules, rows=50_000
    )
    model = train(logs, definitions.schema, definitions.catalog, TrainerSettings())
    folder = artifact.save(settings.model_dir, model)
    compiled.compile_artifact(replace(model, folder=folder))
    return settings


async def _loop(port: int, method: str, seconds: float, offset: int) -> list[float]:
    options = [("grpc.use_local_subchannel_pool", 1)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        decide = decision_pb2_grpc.DecisionServiceStub(channel).Decide
        check = health_pb2_grpc.HealthStub(channel).Check
        event = profile_pb2_grpc.ProfileServiceStub(channel).RecordEvent
        ping = health_pb2.HealthCheckRequest()
        latencies: list[float] = []
        n = offset
        until = time.perf_counter() + seconds
        while time.perf_counter() < until:
            n += 1
            started = time.perf_counter()
            if method == "decide":
                request = decision_pb2.DecideRequest(
                    customer_id=f"cust-{1 + n % CUSTOMERS:06d}",
                    channel=common_pb2.CHANNEL_WEB,
                    placement="home_hero",
                    limit=3,
                )
                await decide(request, timeout=5)
            elif method == "event":
                await event(
                    profile_pb2.RecordEventRequest(
                        customer_id=f"cust-{1 + n % CUSTOMERS:06d}",
                        channel=common_pb2.CHANNEL_WEB,
                        event_type="product_view",
                        attributes={"category": "fibre"},
                    ),
                    timeout=5,
                )
            else:
                await check(ping, timeout=5)
            latencies.append(time.perf_counter() - started)
        return latencies


def _client(port: int, method: str, seconds: float, connections: int, index: int) -> list[float]:
    async def run() -> list[float]:
        offsets = [(index * connections + c) * 997_331 for c in range(connections)]
        parts = await asyncio.gather(*(_loop(port, method, seconds, o) for o in offsets))
        return [x for part in parts for x in part]

    return asyncio.run(run())


def read_your_writes(port: int) -> int:
    """Events that the next GetProfile, on another connection, already shows."""
    options = [("grpc.use_local_subchannel_pool", 1)]
    seen = 0
    with (
        grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as a,
        grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as b,
    ):
        write = profile_pb2_grpc.ProfileServiceStub(a).RecordEvent
        read = profile_pb2_grpc.ProfileServiceStub(b).GetProfile
        for n in range(50):
            customer = f"cust-{40_000 + n:06d}"
            kind = f"ryw_{n}"
            write(
                profile_pb2.RecordEventRequest(
                    customer_id=customer, channel=common_pb2.CHANNEL_WEB, event_type=kind
                ),
                timeout=5,
            )
            profile = read(profile_pb2.GetProfileRequest(customer_id=customer), timeout=5)
            seen += any(e.event_type == kind for e in profile.recent_events)
    return seen


def cpu_seconds(root: int) -> float:
    """CPU time (user + system) of process ``root`` and every live descendant (workers,
    log processes), from /proc; 0 where there is none (not Linux)."""
    parents: dict[int, int] = {}
    used: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        used[pid] = (int(fields[11]) + int(fields[12])) / tick
    total = 0.0
    for pid, seconds in used.items():
        p = pid
        while p and p != root:
            p = parents.get(p, 0)
        if p == root:
            total += seconds
    return total


def phase(
    port: int,
    method: str,
    seconds: float,
    clients: int,
    connections: int,
    server_pid: int | None = None,
) -> dict[str, float]:
    """Closed-loop calls of ``method``; with ``server_pid``, also the server's CPU time
    per call (its process tree: what a call costs the server, whoever else is busy)."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(clients) as pool:
        before = cpu_seconds(server_pid) if server_pid else 0.0
        results = pool.starmap(
            _client, [(port, method, seconds, connections, i) for i in range(clients)]
        )
        used = cpu_seconds(server_pid) - before if server_pid else 0.0
    latencies = np.array([x for r in results for x in r]) * 1e6
    p50, p90, p99, p999 = np.percentile(latencies, [50, 90, 99, 99.9])
    return {
        "p50": p50,
        "p90": p90,
        "p99": p99,
        "p999": p999,
        "rate": latencies.size / seconds,
        "cpu_us": used / latencies.size * 1e6,
    }


def collections(metrics_port: int) -> str:
    """The server's garbage collections so far, from its /metrics: count, mean and how
    many held it 10 ms or more, by generation."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    seen: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "arbiter_gc_pause_seconds":
            continue
        for sample in family.samples:
            g = seen.setdefault(sample.labels.get("generation", "?"), {})
            if sample.name.endswith("_count"):
                g["count"] = sample.value
            elif sample.name.endswith("_sum"):
                g["sum"] = sample.value
            elif sample.name.endswith("_bucket") and sample.labels.get("le") == "0.0075":
                g["under"] = sample.value
    parts = []
    for generation, g in sorted(seen.items()):
        n = g.get("count", 0)
        mean = g.get("sum", 0) / n * 1000 if n else 0
        parts.append(
            f"gen{generation} {n:.0f} (mean {mean:.2f} ms, {n - g.get('under', 0):.0f} over 7.5 ms)"
        )
    return ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--connections", type=int, default=4, help="per client process")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--variant",
        nargs="+",
        default=["defaults"],
        help="server settings to compare side by side, each 'name=value,...' or 'defaults'"
        " (a lever taken away: 'log_writer=inline', 'hot_client=false')",
    )
    args = parser.parse_args()
    with benchmark_redis() as redis_url, tempfile.TemporaryDirectory() as tmp:
        settings = prepare(Path(tmp), redis_url)
        print(
            f"demo catalog, {CUSTOMERS} customers, compiled 150-tree model; {args.clients}"
            f" client processes x {args.connections} connections, closed loop, {args.seconds:g} s"
            " phases"
        )
        rates: dict[int, float] = {}
        for workers, variant in ((w, v) for w in args.workers for v in args.variant):
            extra = dict(p.split("=", 1) for p in variant.split(",") if "=" in p)
            port, metrics_port = free_port(), free_port()
            server = start_server(
                settings, port, workers, **{"metrics_port": str(metrics_port), **extra}
            )
            try:
                seen: dict[str, list[dict[str, float]]] = {"check": [], "decide": [], "event": []}
                for method in ("check", "decide", "event", "check", "decide", "event"):
                    seen[method].append(
                        phase(
                            port,
                            method,
                            args.seconds,
                            args.clients,
                            args.connections,
                            server.pid,
                        )
                    )
                seen_own = read_your_writes(port)
                gc_line = collections(metrics_port)
            finally:
                server.terminate()
                server.wait(timeout=60)
            print(f"\n{workers} worker{'s' if workers > 1 else ''}, {variant}:")
            best = {m: min(runs, key=lambda r: r["p99"]) for m, runs in seen.items()}
            for method, runs in seen.items():
                for r in runs:
                    print(
                        f"  {method:7s} p50 {r['p50']:6.0f} us  p90 {r['p90']:6.0f} us"
                        f"  p99 {r['p99']:6.0f} us  p99.9 {r['p999']:6.0f} us"
                        f"  {r['rate']:6.0f} calls/s  server CPU {r['cpu_us']:5.0f} us a call"
                    )
            event_rate = float(np.mean([r["rate"] for r in seen["event"]]))
            print(f"  RecordEvent {event_rate:.0f} events/s (target >= 2000)")
            print(f"  read-your-writes: {seen_own} of 50 events seen by the next GetProfile")
            print(f"  garbage collections over the run: {gc_line}")
            check_rate = np.mean([r["rate"] for r in seen["check"]])
            decide_rate = float(np.mean([r["rate"] for r in seen["decide"]]))
            rates[workers] = decide_rate
            ratio = best["decide"]["p99"] / best["check"]["p99"]
            print(
                f"  Decide p99 / Check p99: x{ratio:.2f} (target <= 1.5);"
                f" Decide / Check calls/s: {decide_rate / check_rate:.2f} (target >= 0.60)"
            )
        if 1 in rates and 2 in rates:
            print(f"\nDecide calls/s, 2 workers / 1: x{rates[2] / rates[1]:.2f}")
        timer = StageTimer()
        ms = asyncio.run(measure(settings, 1000, timer))
        p50, p99 = np.percentile(ms, [50, 99])
        print(
            f"\nin-server decide(), demo catalog: p50 {p50:.2f} ms, p99 {p99:.2f} ms"
            " (target p50 <= 0.5 ms, p99 <= 1 ms); stages, mean us: "
            + ", ".join(f"{stage} {total / ms.size:.0f}" for stage, total in timer.totals.items())
        )


if __name__ == "__main__":
    main()
