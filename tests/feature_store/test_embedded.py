from __future__ import annotations

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
