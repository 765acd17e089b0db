"""grpc.aio versus the threaded grpc server, for an echo RPC (the health Check).

Each server runs in its own process; one client measures sequential latency, then an
asyncio client with 16 calls in flight measures throughput. Interleaved rounds, medians.
Decides which server stack Arbiter uses (docs/architecture.md).

    .venv/bin/python benchmarks/bench_server_stack.py
"""

from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import time
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from benchmarks.common import percentiles
from feature_store.embedded import _free_port


def run_threaded(port: int) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


def run_aio(port: int) -> None:
    async def main() -> None:
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    asyncio.run(main())


def latency(port: int, calls: int) -> list[float]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        check = health_pb2_grpc.HealthStub(channel).Check
        request = health_pb2.HealthCheckRequest()
        for _ in range(200):
            check(request)
        samples = []
        for _ in range(calls):
            t = time.perf_counter()
            check(request)
            samples.append((time.perf_counter() - t) * 1e6)
        return samples


async def throughput(port: int, seconds: float = 2.0, concurrency: int = 16) -> float:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        check = health_pb2_grpc.HealthStub(channel).Check
        done = 0
        stop = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < stop:
                await check(health_pb2.HealthCheckRequest())
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return done / (time.perf_counter() - started)


def main() -> None:
    servers = {}
    for name, target in (("aio", run_aio), ("threaded", run_threaded)):
        port = _free_port()
        process = multiprocessing.Process(target=target, args=(port,), daemon=True)
        process.start()
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
        servers[name] = (port, process)
    samples: dict[str, list[float]] = {name: [] for name in servers}
    rates: dict[str, list[float]] = {name: [] for name in servers}
    for _ in range(3):
        for name, (port, _) in servers.items():
            samples[name] += latency(port, 1000)
            rates[name].append(asyncio.run(throughput(port)))
    for name in servers:
        print(
            f"{name:9s} {percentiles(samples[name])}  {statistics.median(rates[name]):6.0f} calls/s"
        )
    for _, process in servers.values():
        process.terminate()


if __name__ == "__main__":
    main()
