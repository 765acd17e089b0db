"""Model promotion under steady load: calls failed, and latency around each swap.

One run on this machine:
- the server runs in its own process (`arbiter serve`, reload check every 0.2 s), with the
  benchmark catalog of 100 eligible offers, profiles in a real redis-server and two
  trained models in its registry;
- an asyncio client keeps a fixed number of Decide calls in flight for the whole run,
  while the promoted model is switched between the two every few seconds (as
  `arbiter models promote` does: the ``CURRENT`` file is rewritten);
- every call is counted: its status, whether the answer was degraded, the model that
  answered it, and its latency; latency is compared between the calls started in the
  second around each swap (from 0.5 s before the first answer of the new model to 0.5 s
  after it) and all the others.

    .venv/bin/python -m benchmarks.bench_swap --help
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import itertools
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import grpc
import numpy as np

from arbiter.v1 import decision_pb2_grpc
from benchmarks.bench_decide import CUSTOMERS, prepare, request
from benchmarks.common import benchmark_redis, percentiles, start_server
from common.ports import free_port
from engine.adapters import artifact
from engine.settings import ServerSettings, load_definitions
from training.settings import TrainerSettings
from training.synthetic_logs import simulate_logs
from training.train import train
from training.world import generate


@dataclass(frozen=True)
class Call:
    started: float
    micros: float
    status: str  # gRPC status name
    degraded: bool
    model: str


async def load(port: int, seconds: float, concurrency: int, limit: int, calls: list[Call]) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        decide = decision_pb2_grpc.DecisionServiceStub(channel).Decide
        stop = time.perf_counter() + seconds

        async def worker(w: int) -> None:
            i = w
            while time.perf_counter() < stop:
                started = time.perf_counter()
                try:
                    reply = await decide(request(i, limit), timeout=5)
                    status, degraded, model = "OK", reply.degraded, reply.model_version
                except grpc.aio.AioRpcError as exc:
                    status, degraded, model = exc.code().name, False, ""
                calls.append(
                    Call(started, (time.perf_counter() - started) * 1e6, status, degraded, model)
                )
                i += concurrency

        await asyncio.gather(*(worker(w) for w in range(concurrency)))


async def promote_every(model_dir: Path, versions: tuple[str, str], every: float, n: int) -> None:
    for k in range(n):
        await asyncio.sleep(every)
        artifact.set_current(model_dir, versions[(k + 1) % 2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--offers", type=int, default=100)
    parser.add_argument("--trees", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=24.0)
    parser.add_argument("--every", type=float, default=3.0, help="seconds between promotions")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--limit", type=int, default=3)
    args = parser.parse_args()

    with benchmark_redis() as redis_url, tempfile.TemporaryDirectory() as tmp:
        settings = prepare(Path(tmp), redis_url, args.offers, args.trees)
        first = artifact.load(settings.model_dir)
        second = second_model(settings, args.trees * 2)
        artifact.save(settings.model_dir, second, promote=False)
        versions = (first.version, second.version)
        settings = settings.model_copy(update={"reload_seconds": 0.2})
        port = free_port()
        server = start_server(settings, port)
        calls: list[Call] = []
        swaps = int(args.seconds // args.every) - 1
        try:
            asyncio.run(load(port, 1.0, args.concurrency, args.limit, []))  # warm-up

            async def run() -> None:
                await asyncio.gather(
                    load(port, args.seconds, args.concurrency, args.limit, calls),
                    promote_every(settings.model_dir, versions, args.every, swaps),
                )

            asyncio.run(run())
        finally:
            artifact.set_current(settings.model_dir, first.version)
            server.terminate()
            server.wait(timeout=30)
    report(calls, versions, swaps, args.concurrency)


def second_model(settings: ServerSettings, trees: int) -> artifact.ModelArtifact:
    """Another booster (more trees, other simulated logs of the same world), so a swap
    loads a genuinely different model."""
    definitions = load_definitions(settings)
    logs = simulate_logs(
        generate(CUSTOMERS, seed=7),
        definitions.schema,
        definitions.catalog,
        definitions.stage_rules,
        rows=30_000,
        seed=11,
    )
    return train(logs, definitions.schema, definitions.catalog, TrainerSettings(num_trees=trees))


def report(calls: list[Call], versions: tuple[str, str], swaps: int, concurrency: int) -> None:
    calls.sort(key=lambda c: c.started)
    statuses = Counter(c.status for c in calls)
    answered = [c for c in calls if c.status == "OK"]
    # A swap is seen when the answering model changes between consecutive answers.
    seen = [
        b.started
        for a, b in itertools.pairwise(answered)
        if a.model != b.model and b.model in versions
    ]
    # With calls in flight, answers of the old and new model interleave for a moment:
    # count a swap once, at its first new answer.
    swap_times: list[float] = []
    for t in seen:
        if not swap_times or t - swap_times[-1] > 1.0:
            swap_times.append(t)

    def near_swap(c: Call) -> bool:
        i = bisect.bisect_left(swap_times, c.started - 0.5)
        return i < len(swap_times) and swap_times[i] <= c.started + 0.5

    around = [c.micros for c in answered if near_swap(c)]
    steady = [c.micros for c in answered if not near_swap(c)]
    span = calls[-1].started - calls[0].started if calls else 0.0
    print(f"\n{len(calls)} Decide calls over {span:.1f} s, {concurrency} in flight")
    print(f"  by status: {dict(statuses)}")
    print(f"  failed: {len(calls) - statuses['OK']}")
    degraded = [c for c in answered if c.degraded]
    print(
        f"  degraded answers: {len(degraded)}"
        f" ({sum(near_swap(c) for c in degraded)} of them within 0.5 s of a swap)"
    )
    print(f"  answers by model: {dict(Counter(c.model for c in answered))}")
    print(f"  promotions made: {swaps}, swaps seen by the client: {len(swap_times)}")
    if around and steady:
        print(f"  latency, calls within 0.5 s of a swap: {percentiles(around)}")
        print(f"  latency, all other calls:             {percentiles(steady)}")
        ratio = np.percentile(around, [50, 99]) / np.percentile(steady, [50, 99])
        print(f"  around a swap / steady: p50 x{ratio[0]:.2f}, p99 x{ratio[1]:.2f}")


if __name__ == "__main__":
    main()
