from __future__ import annotations

import contextlib
import time
from pathlib import Path

import redis

from feature_store.embedded import EmbeddedRedis


def test_embedded_redis_is_6_2_and_keeps_data_across_restarts(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path / "redis") as server:
        client = redis.Redis.from_url(server.url)
        assert client.info("server")["redis_version"].startswith("6.2")
        client.set("k", "v")
        client.close()
    with EmbeddedRedis(tmp_path / "redis") as server:
        assert redis.Redis.from_url(server.url).get("k") == b"v"


def test_a_watched_server_that_crashes_is_started_again_where_it_was(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis").start()
    watcher = server.watch(backoff=0.05)
    try:
        client = redis.Redis.from_url(server.url)
        client.set("k", "v")
        client.save()
        first = server.pid
        server.kill()  # SIGKILL: a crash, no goodbye
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(redis.ConnectionError):
                if client.get("k") == b"v":
                    break
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert server.pid not in (None, first)
    finally:
        server.stop()
    watcher.join(timeout=10)
    assert not watcher.is_alive()  # stop() ends the looking after, and no third server
    assert server.pid is None
