"""What a Decide costs grpc.aio before any decision is made: the server's CPU per call
(its process, from /proc) for Health/Check, for a Decide answered at once with a canned
demo-sized response (3 actions, messages and reasons), and for the same after two
awaited Redis round trips on the hot connection (what the read and the reservation add
as waits, without their work); then Arbiter's own servicer and application on a bare
grpc.aio server, and `arbiter serve` itself (interceptor, metrics, bound on calls in
flight): closed loop as bench_load, one run.

    .venv/bin/python -m benchmarks.bench_grpc_floor [--seconds 4]

``SWITCH=<seconds>`` sets the bare servers' ``sys.setswitchinterval`` (how long a thread
holds the GIL before gRPC's poller thread may take it), for experiments.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health_pb2_grpc

from arbiter.v1 import common_pb2, decision_pb2, decision_pb2_grpc
from benchmarks.bench_load import phase, prepare
from benchmarks.common import benchmark_redis, start_server
from common.ports import free_port
from engine.api.server import build_application, redis_store_for
from engine.api.servicer import DecisionServicer
from engine.settings import ServerSettings, load_definitions
from feature_store.hot_redis import HotRedis


def canned() -> decision_pb2.DecideResponse:
    reasons = [
        decision_pb2.Reason(code=c, text=t)
        for c, t in (
            ("LIFECYCLE_STAGE", "stage consideration: browsing the fibre pages this week"),
            ("RULE_ELIGIBILITY", "audience: tenure_months >= 6 and not has_fibre"),
            ("CONTACT_POLICY", "within its cap: 1 of 3 used this week"),
            ("ARBITRATION", "priority 4.21 = propensity 0.123 x value 34.2 x lever 1.0"),
        )
    ]
    return decision_pb2.DecideResponse(
        decision_id="d1_" + "x" * 60,
        customer_id="cust-000042",
        lifecycle_stage=common_pb2.LIFECYCLE_STAGE_CONSIDERATION,
        model_version="20261204T000000-abcdef",
        actions=[
            decision_pb2.Action(
                offer_id=f"offer_{i}",
                rank=i + 1,
                message=decision_pb2.Message(
                    headline="Fibre broadband 900 for the price of 500",
                    body="Hi Ana, your street has fibre now: 900 Mb/s, first three months free.",
                    call_to_action="See the offer",
                    url="https://example.com/fibre-900",
                    treatment_id=f"offer_{i}/web/default",
                ),
                propensity=0.123,
                value=34.2,
                priority=4.21,
                probability=0.5,
                reasons=reasons,
            )
            for i in range(3)
        ],
    )


class Canned(decision_pb2_grpc.DecisionServiceServicer):
    def __init__(self, waits: int, redis_url: str) -> None:
        self._answer = canned()
        self._waits = waits
        self._redis = HotRedis(redis_url) if waits else None

    async def Decide(
        self, request: decision_pb2.DecideRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> decision_pb2.DecideResponse:
        for _ in range(self._waits):
            assert self._redis is not None
            await self._redis.command(("PING",))
        return self._answer


def serve(port: int, waits: int, redis_url: str, data_dir: str = "") -> None:
    """``data_dir``: Arbiter's own servicer and application on that data (the demo world
    and model), on a bare grpc.aio server (no interceptor, no bound on calls)."""

    if os.environ.get("SWITCH"):
        sys.setswitchinterval(float(os.environ["SWITCH"]))

    async def main() -> None:
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(health_aio.HealthServicer(), server)
        servicer: Any
        if data_dir:
            settings = ServerSettings(data_dir=Path(data_dir), redis_url=redis_url)
            definitions = load_definitions(settings)
            store = redis_store_for(settings, redis_url, definitions)
            application = build_application(settings, store, definitions)
            await store.prepare()
            application.writer.start()
            await application.writer.ready()
            servicer = DecisionServicer(application)
        else:
            servicer = Canned(waits, redis_url)  # type: ignore[abstract]  # Decide only
        decision_pb2_grpc.add_DecisionServiceServicer_to_server(servicer, server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    with benchmark_redis() as redis_url, tempfile.TemporaryDirectory() as tmp:
        prepare(Path(tmp), redis_url)  # the demo world and model, for the last two
        print("server CPU per call, closed loop, 2 client processes x 4 connections:")
        for label, method, waits, data_dir, real in (
            ("Health/Check", "check", 0, "", False),
            ("Decide, canned answer", "decide", 0, "", False),
            ("Decide, canned after 2 Redis PINGs", "decide", 2, "", False),
            ("Decide, Arbiter's servicer, bare server", "decide", 0, tmp, False),
            ("Decide, `arbiter serve`", "decide", 0, tmp, True),
        ):
            port = free_port()
            if real:
                settings = ServerSettings(data_dir=Path(tmp), redis_url=redis_url)
                server: Any = start_server(settings, port)
            else:
                server = context.Process(
                    target=serve, args=(port, waits, redis_url, data_dir), daemon=True
                )
                server.start()
                time.sleep(8.0 if data_dir else 1.5)  # listening (a model to load)
            assert server.pid is not None
            phase(port, method, 1.0, 2, 4)  # warm
            r = phase(port, method, args.seconds, 2, 4, server.pid)
            print(
                f"  {label:36s} {r['rate']:6.0f} calls/s  p99 {r['p99']:6.0f} us"
                f"  server CPU {r['cpu_us']:5.0f} us a call"
            )
            server.terminate()
            if real:
                server.wait(timeout=60)
            else:
                server.join(timeout=10)
    sys.stdout.flush()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
