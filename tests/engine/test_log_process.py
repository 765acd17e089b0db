"""The decision log written by a process of its own (engine/service/log_process.py),
through the real server on a real Redis: a graceful stop writes everything served, a log
process killed mid-run is replaced and given what it had not acknowledged, and with
``ARBITER_LOG_WRITER=inline`` the server writes the log itself."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import redis

from arbiter.v1 import common_pb2, decision_pb2
from common.ports import free_port
from engine.service import decision_log, log_process
from engine.service.decision_log import DecisionLogWriter
from engine.service.log_process import LogProcess
from feature_store.hot_redis import HotRedis
from feature_store.log_append import LogAppender
from feature_store.log_reader import read_decisions
from feature_store.redis_client import connect
from feature_store.store import LoggedDecision
from tests.conftest import ServerThread


def _decide(server: ServerThread, customers: range) -> list[str]:
    ids = []
    for n in customers:
        request = decision_pb2.DecideRequest(
            customer_id=f"cust-{n:06d}", channel=common_pb2.CHANNEL_WEB, limit=2
        )
        ids.append(server.decisions.Decide(request, timeout=5).decision_id)
    return ids


def test_a_graceful_stop_writes_every_decision_served(
    server_factory: Callable[..., ServerThread], loaded: redis.Redis, redis_url: str
) -> None:
    server = server_factory(redis_url)
    assert isinstance(server.application.writer, LogProcess)
    served = _decide(server, range(1, 81))
    server.stop()  # no flush first: the stop itself hands everything over
    logged = [d["decision_id"] for d in read_decisions(loaded)]
    assert sorted(logged) == sorted(served)


def test_a_killed_log_process_is_replaced_and_nothing_is_lost(
    server_factory: Callable[..., ServerThread], loaded: redis.Redis, redis_url: str
) -> None:
    server = server_factory(redis_url)
    writer = server.application.writer
    assert isinstance(writer, LogProcess)
    served = _decide(server, range(1, 41))
    server.flush_log()
    first = writer._proc
    assert first is not None
    os.kill(first.pid, signal.SIGKILL)
    served += _decide(server, range(41, 81))  # while no log process runs
    until = time.monotonic() + 10
    while writer._proc is first and time.monotonic() < until:
        time.sleep(0.05)
    assert writer.restarts == 1 and writer._proc is not first
    server.flush_log()
    logged = [d["decision_id"] for d in read_decisions(loaded)]
    # none lost, none twice (everything before the kill was acknowledged)
    assert sorted(logged) == sorted(served)
    assert writer.dropped == 0 and writer.pending == 0


def test_the_inline_writer_still_serves(
    server_factory: Callable[..., ServerThread], loaded: redis.Redis, redis_url: str
) -> None:
    server = server_factory(redis_url, log_writer="inline")
    assert isinstance(server.application.writer, DecisionLogWriter)
    served = _decide(server, range(1, 21))
    server.flush_log()
    assert sorted(d["decision_id"] for d in read_decisions(loaded)) == sorted(served)


def test_a_decision_that_cannot_be_logged_is_dropped_and_the_rest_written(
    server_factory: Callable[..., ServerThread],
    loaded: redis.Redis,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = decision_log.log_entry

    def broken_for_one(decision: Any, *rest: Any) -> Any:
        if decision.customer_id == "cust-000003":
            raise ValueError("a bug")
        return real(decision, *rest)

    monkeypatch.setattr(log_process, "log_entry", broken_for_one)
    server = server_factory(redis_url)
    writer = server.application.writer
    assert isinstance(writer, LogProcess)
    served = _decide(server, range(1, 6))
    server.flush_log()  # does not wait for the dropped one
    logged = sorted(d["decision_id"] for d in read_decisions(loaded))
    assert logged == sorted(served[:2] + served[3:])
    assert writer.dropped == 1 and writer.pending == 0
    more = _decide(server, range(6, 9))  # the writer goes on
    server.flush_log()
    assert len(read_decisions(loaded)) == len(logged) + len(more)


def test_a_flush_while_redis_is_down_retries_without_spinning() -> None:
    """A graceful stop with Redis gone: the writer tries again every 50 ms until the flush
    gives up, not as fast as a connect can fail (a spin that held a core for the whole
    stop)."""

    class Counted(LogAppender):
        attempts = 0

        async def append_decisions(self, decisions: Sequence[LoggedDecision]) -> None:
            Counted.attempts += 1
            await super().append_decisions(decisions)

    async def main() -> tuple[bool, int]:
        url = f"redis://127.0.0.1:{free_port()}"  # nothing listens: refused
        appender = Counted(connect(url), hot=HotRedis(url))
        writer = DecisionLogWriter(appender, ())
        writer.start()
        writer.submit_logged(LoggedDecision("cust-1", {"decision_id": "d1"}, {"offer": "x"}))
        flushed = await writer.flush(timeout=0.5)
        await writer.close(timeout=0.1)
        return flushed, Counted.attempts

    flushed, attempts = asyncio.run(main())
    assert not flushed
    assert 3 <= attempts <= 15, attempts  # ~every 50 ms for 0.5 s
