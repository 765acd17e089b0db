"""`arbiter serve --workers 2`, as an operator runs it: two processes on one port, each
serving, reloading and draining its decision log; a dead worker is replaced; the port is
not shared with another server by accident."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from arbiter.v1 import common_pb2, decision_pb2, decision_pb2_grpc
from common.ports import free_port
from feature_store import keys
from tests.conftest import sample, scrape

SERVING = re.compile(r"\[worker (\d)/2 (\d+)\] engine\.api\.server: arbiter serving")
RELOADED = re.compile(r"\[worker \d/2 (\d+)\] engine\.service\.reloader: reloaded")


def _decide(port: int, customer: str) -> decision_pb2.DecideResponse:
    # A channel of its own (no shared subchannel): a new connection, which the kernel
    # hands to either worker.
    options = [("grpc.use_local_subchannel_pool", 1)]
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        stub = decision_pb2_grpc.DecisionServiceStub(channel)
        request = decision_pb2.DecideRequest(customer_id=customer, channel=common_pb2.CHANNEL_WEB)
        return stub.Decide(request, timeout=10)


def _wait_for(log: Path, pattern: re.Pattern[str], count: int, seconds: float = 60) -> list[Any]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = pattern.findall(log.read_text())
        if len(found) >= count:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{pattern.pattern} x{count} not seen in:\n{log.read_text()}")


def test_two_workers_share_the_port_and_stop_cleanly(
    model_dir: Path, daytime_catalog: Path, loaded: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    port = free_port()
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(daytime_catalog.read_text())
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "ARBITER_DATA_DIR": str(model_dir.parent),
        "ARBITER_CATALOG_PATH": str(catalog),
        "ARBITER_RELOAD_SECONDS": "0.2",
        "ARBITER_DECISION_SECRETS_FILE": str(tmp_path / "secrets"),
        "ARBITER_METRICS_PORT": str(metrics_port := free_port()),
    }
    arbiter = [sys.executable, "-m", "training.cli", "serve"]
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        supervisor = subprocess.Popen(
            [*arbiter, "--workers", "2", "--port", str(port)], env=env, stdout=out, stderr=out
        )
    try:
        workers = dict(_wait_for(log, SERVING, 2))
        assert sorted(workers) == ["1", "2"]
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
        assert health.status == health_pb2.HealthCheckResponse.SERVING

        answers = [_decide(port, f"cust-{n:06d}") for n in range(1, 21)]
        assert all(a.actions for a in answers)
        # One /metrics for both workers: every call counted once, both processes seen.
        seen = scrape(metrics_port)
        assert sample(seen, "arbiter_rpc_seconds_count", method="Decide", code="OK") == 20
        info = {dict(labels)["pid"] for (name, labels) in seen if name == "arbiter_model_info"}
        assert info == set(workers.values()), info

        # A second server on the busy port is refused, with or without workers.
        for count in ("2", "1"):
            other = subprocess.run(
                [*arbiter, "--workers", count, "--port", str(port)],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert other.returncode == 2 and "cannot listen" in other.stderr, other.stderr

        # Every worker reloads a changed catalog.
        catalog.write_text(catalog.read_text() + "\n# changed\n")
        assert len(set(_wait_for(log, RELOADED, 2))) == 2

        # A worker that dies is replaced; the service goes on.
        os.kill(int(workers["1"]), signal.SIGKILL)
        _wait_for(log, SERVING, 3)
        assert all(_decide(port, f"cust-{n:06d}").actions for n in range(21, 31))
    finally:
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=30) == 0
    text = log.read_text()
    assert text.count("engine.api.server: shutting down") == 2
    # Both workers drained their decision logs: the 30 decisions are all in the stream
    # (the killed worker's were written before it died: the log flushes in the background).
    assert sum(loaded.xlen(k) for k in keys.decision_logs()) >= 30


def test_what_every_worker_would_refuse_is_refused_once(tmp_path: Path) -> None:
    """An unguarded public address: one clear refusal, not workers restarted in a loop."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ARBITER_", "REDIS_"))}
    env = {
        **clean,
        "ARBITER_DATA_DIR": str(tmp_path),
        "ARBITER_HOST": "0.0.0.0",
        "REDIS_URL": "redis://127.0.0.1:1/0",  # never reached
    }
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "training.cli",
            "serve",
            "--workers",
            "2",
            "--port",
            str(free_port()),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "refusing to listen on 0.0.0.0 without TLS and API keys" in done.stderr
    assert "starting another" not in done.stderr and "Traceback" not in done.stderr
    assert time.monotonic() - started < 30
