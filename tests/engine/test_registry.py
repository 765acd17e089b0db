"""A model registry every replica sees (``ARBITER_MODEL_REGISTRY=redis``): two servers
that share no folder serve what is promoted, rolled back or challenged anywhere, within
their reload interval."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from arbiter.v1 import common_pb2, decision_pb2
from common.errors import ConfigurationError
from engine.adapters import artifact
from engine.service.registry import SharedModels
from feature_store.redis_client import connect_sync
from feature_store.registry import RedisRegistry
from tests.conftest import ServerThread


def serving(server: ServerThread) -> str:
    request = decision_pb2.DecideRequest(
        customer_id="cust-000042", channel=common_pb2.CHANNEL_WEB, limit=3
    )
    return server.decisions.Decide(request, timeout=5).model_version


def until(condition: Callable[[], bool], timeout: float = 10) -> float:
    """Seconds until ``condition()`` holds (fails past ``timeout``)."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout
        time.sleep(0.02)
    return time.monotonic() - started


def until_all_serve(servers: list[ServerThread], version: str) -> float:
    """Seconds until every server answers with ``version``."""
    return until(lambda: all(serving(s) == version for s in servers))


@pytest.fixture
def trainer(tmp_path: Path, model_dir: Path, redis_url: str) -> SharedModels:
    """A trainer's own folder holding two versions of the test model, and the registry."""
    folder = tmp_path / "trainer" / "models"
    folder.mkdir(parents=True)
    first = artifact.load(model_dir)
    shutil.copytree(model_dir / first.version, folder / first.version)
    later = (datetime.now(UTC) + timedelta(seconds=1)).replace(microsecond=0)
    second = replace(first, version=artifact.new_version(first.model_text, later), folder=None)
    artifact.save(folder, second, promote=False)
    return SharedModels(folder, RedisRegistry(connect_sync(redis_url)))


def test_two_servers_sharing_no_folder_follow_the_registry(
    server_factory: Callable[..., ServerThread],
    loaded: redis.Redis,
    redis_url: str,
    tmp_path: Path,
    trainer: SharedModels,
) -> None:
    replicas = [
        server_factory(
            redis_url, data_dir=tmp_path / name, model_registry="redis", reload_seconds=0.1
        )
        for name in ("a", "b")
    ]
    first, second = (m.version for m in artifact.versions(trainer.model_dir))
    assert serving(replicas[0]) != first  # nothing promoted yet: no model to serve

    trainer.promote(first)  # published (it was only in the trainer's folder), then promoted
    assert until_all_serve(replicas, first) < 2
    assert (tmp_path / "a" / "models" / first / "model.o").is_file()  # compiled form too

    trainer.promote(second)
    assert until_all_serve(replicas, second) < 2
    trainer.promote(first)  # a rollback travels the same way
    assert until_all_serve(replicas, first) < 2

    trainer.challenge(second, 0.5)
    assert until(lambda: all(r.application.challenger for r in replicas)) < 2
    assert {r.application.challenger[1] for r in replicas if r.application.challenger} == {0.5}
    trainer.challenge(None)
    assert until(lambda: not any(r.application.challenger for r in replicas)) < 2


def test_a_server_started_after_a_promotion_serves_it_from_the_start(
    server_factory: Callable[..., ServerThread],
    loaded: redis.Redis,
    redis_url: str,
    tmp_path: Path,
    trainer: SharedModels,
) -> None:
    version = artifact.versions(trainer.model_dir)[0].version
    trainer.promote(version)
    server = server_factory(
        redis_url, data_dir=tmp_path / "new", model_registry="redis", reload_seconds=60
    )
    assert serving(server) == version


def test_what_is_not_in_the_registry_cannot_be_promoted(
    trainer: SharedModels, redis_client: redis.Redis
) -> None:
    with pytest.raises(ConfigurationError, match="no model version nope"):
        trainer.registry.set_current("nope")
    with pytest.raises(ConfigurationError, match="no model version nope"):
        trainer.promote("nope")  # not in the trainer's folder either
    version = artifact.versions(trainer.model_dir)[0].version
    with pytest.raises(ConfigurationError, match=r"share 1\.5 must be between 0 and 1"):
        trainer.challenge(version, 1.5)
    assert trainer.registry.pointers() == (None, None)
