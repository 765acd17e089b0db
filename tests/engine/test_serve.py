"""`arbiter serve` as an operator starts it: on a busy port and on a full disk it stops at
once with a clear word, and leaves no redis-server of its own behind."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import redis

from arbiter.v1 import common_pb2, decision_pb2
from feature_store.embedded import _free_port
from tests.conftest import ServerThread


def serve(data_dir: Path, port: int, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ARBITER_", "REDIS_"))}
    return subprocess.run(
        [sys.executable, "-m", "training.cli", "serve", "--port", str(port)],
        env={**clean, "ARBITER_DATA_DIR": str(data_dir), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def servers_of(data_dir: Path) -> list[str]:
    found = subprocess.run(["pgrep", "-af", "redis-server"], capture_output=True, text=True)
    return [line for line in found.stdout.splitlines() if str(data_dir.resolve()) in line]


def test_a_busy_port_fails_fast_with_a_clear_message(
    server_factory: Callable[..., ServerThread],
    loaded: redis.Redis,
    redis_url: str,
    tmp_path: Path,
) -> None:
    busy = server_factory(redis_url)
    started = time.monotonic()

    done = serve(tmp_path, busy.running.port, REDIS_URL=redis_url)

    assert done.returncode == 2
    assert f"cannot listen on 127.0.0.1:{busy.running.port}" in done.stderr
    assert "Traceback" not in done.stderr
    assert time.monotonic() - started < 30
    request = decision_pb2.DecideRequest(customer_id="cust-000042", channel=common_pb2.CHANNEL_WEB)
    assert busy.decisions.Decide(request, timeout=5).actions  # the first one still serves


def test_a_full_disk_at_start_is_a_clear_error_and_no_orphan(tmp_path: Path) -> None:
    (tmp_path / "redis").mkdir()
    (tmp_path / "redis" / "url").symlink_to("/dev/full")  # every write: no space left

    done = serve(tmp_path, _free_port())

    assert done.returncode == 2
    assert "No space left on device" in done.stderr and "Traceback" not in done.stderr
    time.sleep(0.2)
    assert servers_of(tmp_path / "redis") == []
