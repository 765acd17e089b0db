"""Outcomes under stress: a graceful restart with outcomes in flight, and each outcome
sent twice at the same moment (lost or doubled: neither may happen).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import grpc
import redis

from arbiter.v1 import common_pb2, decision_pb2
from benchmarks.chaos.harness import WEB, world
from engine.api.background import BackgroundServer
from feature_store.log_reader import read_outcomes


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


# What a well-behaved client does with UNAVAILABLE ("still being recorded; retry"), or a
# deadline missed on a busy machine: tries again, up to this long
RETRY_SECONDS = 20.0


def send_at_once(
    server: BackgroundServer,
    request: decision_pb2.ReportOutcomeRequest,
    barrier: threading.Barrier,
    answers: list[bool | None],
) -> None:
    """Reports ``request`` when the other thread does, retrying as a client should; its
    answer (recorded or not), or None when every try failed."""
    barrier.wait()
    until = time.monotonic() + RETRY_SECONDS
    while True:
        try:
            answers.append(server.decisions.ReportOutcome(request, timeout=5).recorded)
            return
        except grpc.RpcError as exc:
            retry = exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
            if not retry or time.monotonic() > until:
                answers.append(None)
                return
            time.sleep(0.5)


@dataclass
class Duplicates:
    keys: int
    recorded_twice: int  # both calls answered recorded=true
    logged_twice: int
    unanswered: int = 0  # calls that failed every try (a busy machine's Redis timeouts)


def duplicates(data_dir: Path, keys: int = 100) -> Duplicates:
    with world(data_dir) as (server, own):
        both = unanswered = 0
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
            answers: list[bool | None] = []
            barrier = threading.Barrier(2)
            pair = [
                threading.Thread(target=send_at_once, args=(server, request, barrier, answers))
                for _ in range(2)
            ]
            for t in pair:
                t.start()
            for t in pair:
                t.join()
            both += answers == [True, True]  # not a failed call counted as a "yes"
            unanswered += answers.count(None)
        logged = Counter(o["idempotency_key"] for o in read_outcomes(redis.Redis.from_url(own.url)))
        return Duplicates(keys, both, sum(n - 1 for n in logged.values()), unanswered)
