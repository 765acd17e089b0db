"""`arbiter serve` as an operator starts it: on a busy port and on a full disk it stops at
once with a clear word, and leaves no redis-server of its own behind."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import redis

from arbiter.v1 import common_pb2, decision_pb2, decision_pb2_grpc
from common.ports import free_port
from engine.settings import Definitions
from feature_store.embedded import running_url
from feature_store.loader import load_profiles
from tests.conftest import ServerThread, scrape
from training.world import World


def serve(data_dir: Path, port: int, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ARBITER_", "REDIS_"))}
    return subprocess.run(
        [sys.executable, "-m", "training.cli", "serve", "--port", str(port)],
        env={**clean, "ARBITER_DATA_DIR": str(data_dir), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def servers_of(data_dir: Path) -> list[int]:
    """The pids of the redis-servers running in ``data_dir`` (their working directory:
    a running server's command line shows only its address)."""
    found = subprocess.run(["pgrep", "-x", "redis-server"], capture_output=True, text=True)
    out = []
    for pid in found.stdout.split():
        with contextlib.suppress(OSError):  # ended meanwhile
            if Path(f"/proc/{pid}/cwd").resolve() == data_dir.resolve():
                out.append(int(pid))
    return out


def test_a_busy_port_fails_fast_with_a_clear_message(
    server_factory: Callable[..., ServerThread],
    loaded: redis.Redis,
    redis_url: str,
    tmp_path: Path,
) -> None:
    busy = server_factory(redis_url)

    done = serve(tmp_path, busy.running.port, REDIS_URL=redis_url)

    assert done.returncode == 2
    assert f"cannot listen on 127.0.0.1:{busy.running.port}" in done.stderr
    assert "Traceback" not in done.stderr  # (and at once: serve() gives it 60 s at most)
    request = decision_pb2.DecideRequest(customer_id="cust-000042", channel=common_pb2.CHANNEL_WEB)
    assert busy.decisions.Decide(request, timeout=5).actions  # the first one still serves


def test_a_full_disk_at_start_is_a_clear_error_and_no_orphan(tmp_path: Path) -> None:
    (tmp_path / "redis").mkdir()
    (tmp_path / "redis" / "url").symlink_to("/dev/full")  # every write: no space left

    done = serve(tmp_path, free_port())

    assert done.returncode == 2
    assert "No space left on device" in done.stderr and "Traceback" not in done.stderr
    time.sleep(0.2)
    assert servers_of(tmp_path / "redis") == []


def test_an_embedded_redis_that_dies_is_started_again_and_serving_recovers(
    model_dir: Path, world: World, definitions: Definitions, tmp_path: Path
) -> None:
    """`arbiter serve` on its own redis-server, which then dies (SIGTERM, as an operator's
    stray kill): the death is logged with how it ended, the server is started again on
    the same port and data, the service answers full decisions again by itself, and the
    stop still ends the server."""
    shutil.copytree(model_dir, tmp_path / "models")
    port, metrics_port = free_port(), free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ARBITER_", "REDIS_"))}
    logs = (tmp_path / "serve.log").open("w+")
    command = [sys.executable, "-m", "training.cli", "serve", "--port", str(port), "--workers", "1"]
    service = subprocess.Popen(
        command,
        env={
            **clean,
            "ARBITER_DATA_DIR": str(tmp_path),
            "ARBITER_LEARNER": "off",
            "ARBITER_METRICS_PORT": str(metrics_port),
        },
        stdout=logs,
        stderr=subprocess.STDOUT,
        text=True,
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    decisions = decision_pb2_grpc.DecisionServiceStub(channel)
    request = decision_pb2.DecideRequest(customer_id="cust-000042", channel=common_pb2.CHANNEL_WEB)

    def answer(until: float) -> decision_pb2.DecideResponse:
        """The first full answer before ``until`` (monotonic)."""
        while True:
            with contextlib.suppress(grpc.RpcError):
                got = decisions.Decide(request, timeout=2)
                if not got.degraded:
                    return got
            assert time.monotonic() < until, "no full answer"
            time.sleep(0.05)

    try:
        url = None
        while url is None and service.poll() is None:
            url = running_url(tmp_path / "redis")
            time.sleep(0.05)
        assert url is not None
        client = redis.Redis.from_url(url)
        load_profiles(client, definitions.schema, world.profiles())
        # Before any Decide (so before any degraded answer: the first ones may be, while
        # the service connects), the series an alert on one would watch are there, at 0.
        exposed = _scraped(metrics_port, until=time.monotonic() + 60)
        for reason in ("store_unavailable", "no_time_for_store", "model_failed", "other"):
            key = ("arbiter_degraded_answers_total", frozenset({("reason", reason)}))
            assert exposed.get(key) == 0.0, reason
        assert ("arbiter_outcomes_total", frozenset({("outcome", "accept")})) in exposed
        assert answer(time.monotonic() + 60).actions
        first = servers_of(tmp_path / "redis")
        assert len(first) == 1
        pid = first[0]
        died_by = time.monotonic() + 30

        os.kill(pid, signal.SIGTERM)
        while Path(f"/proc/{pid}").exists():  # saving, then gone and reaped
            assert time.monotonic() < died_by, "the killed redis-server is never reaped"
            time.sleep(0.01)
        died = time.monotonic()
        back = answer(died + 30)
        print(f"\n  a full answer {time.monotonic() - died:.2f} s after the kill")
        assert back.actions and back.actions[0].offer_id
        assert client.exists("arb:{cust-000042}:profile")  # its snapshot, where it was
        again = servers_of(tmp_path / "redis")
        assert len(again) == 1 and again[0] != pid
    finally:
        channel.close()
        service.send_signal(signal.SIGINT)
        service.wait(timeout=30)
        logs.seek(0)
        printed = logs.read()
        logs.close()
    assert f"embedded redis-server (pid {pid}) exited with status 0; starting it again" in printed
    assert f"embedded redis-server back on {url}" in printed
    # the hint to try it, with the address a client needs here
    assert f"arbiter decide cust-000042 --channel web --target 127.0.0.1:{port}\n" in printed
    time.sleep(0.2)
    assert servers_of(tmp_path / "redis") == []  # the stop ended the new one too


def _scraped(port: int, until: float) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """``/metrics`` once the service exposes it (it starts with the service)."""
    while True:
        try:
            exposed = scrape(port)
        except OSError:
            exposed = {}
        if any(name == "arbiter_degraded_answers_total" for name, _ in exposed):
            return exposed
        assert time.monotonic() < until, "no /metrics"
        time.sleep(0.05)
