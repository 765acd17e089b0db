"""Shared fixtures: a real Redis, a real trained model, a real gRPC server.

Redis: ``REDIS_URL`` when set (its database is FLUSHED before each test that uses it),
else an embedded redis-server 6.2 started once per session on a free loopback port.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
import redis

from arbiter.v1 import decision_pb2_grpc, profile_pb2_grpc
from engine import artifact
from engine.config import Definitions, ServerSettings, load_definitions
from engine.reloader import Reloader
from engine.server import ArbiterServer, build_arbiter, start_server
from feature_store import redis_store
from feature_store.embedded import redis_or_embedded
from feature_store.loader import load_profiles
from training.simulate import simulate_logs
from training.train import TrainingConfig, train
from training.world import World, generate

T = TypeVar("T")
WORLD_SIZE = 2000


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with redis_or_embedded(os.environ.get("REDIS_URL")) as url:
        yield url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture(scope="session")
def definitions() -> Definitions:
    return load_definitions(ServerSettings())


@pytest.fixture(scope="session")
def world() -> World:
    return generate(WORLD_SIZE, seed=7)


@pytest.fixture(scope="session")
def model_dir(
    tmp_path_factory: pytest.TempPathFactory, world: World, definitions: Definitions
) -> Path:
    logs = simulate_logs(
        world, definitions.schema, definitions.catalog, definitions.stage_rules, rows=20_000
    )
    model = train(logs, definitions.schema, definitions.catalog, TrainingConfig(num_trees=40))
    folder = tmp_path_factory.mktemp("data") / "models"
    artifact.save(folder, model)
    return folder


@pytest.fixture
def loaded(redis_client: redis.Redis, world: World, definitions: Definitions) -> redis.Redis:
    """Redis holding the test world's profiles."""
    load_profiles(redis_client, definitions.schema, world.profiles())
    return redis_client


class ServerThread:
    """A real Arbiter gRPC server on 127.0.0.1:0, in its own thread and event loop."""

    def __init__(self, settings: ServerSettings, redis_url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.redis_url = redis_url
        self.running: ArbiterServer = self.run(self._start(settings))
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.running.port}")
        self.decisions = decision_pb2_grpc.DecisionServiceStub(self.channel)
        self.profiles = profile_pb2_grpc.ProfileServiceStub(self.channel)

    async def _start(self, settings: ServerSettings) -> ArbiterServer:
        self.client = redis_store.connect(self.redis_url, timeout_seconds=0.25)
        arbiter = build_arbiter(settings, self.client)
        self.reloader = Reloader(arbiter, settings)
        return await start_server(
            arbiter, "127.0.0.1", 0, 1.0, self.reloader, settings.reload_seconds
        )

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout=30)

    @property
    def arbiter(self) -> Any:
        return self.running.arbiter

    def flush_log(self) -> None:
        assert self.run(self.arbiter.writer.flush(5.0)), "decision log did not drain"

    def stop(self) -> None:
        self.channel.close()
        self.run(self.running.stop())
        self.run(self.client.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


@pytest.fixture
def server_factory(model_dir: Path) -> Iterator[Callable[..., ServerThread]]:
    started: list[ServerThread] = []

    def make(redis_url: str, **overrides: Any) -> ServerThread:
        settings = ServerSettings(**{"data_dir": model_dir.parent, **overrides})
        thread = ServerThread(settings, redis_url)
        started.append(thread)
        return thread

    yield make
    for thread in started:
        thread.stop()


@pytest.fixture
def server(
    server_factory: Callable[..., ServerThread], loaded: redis.Redis, redis_url: str
) -> ServerThread:
    return server_factory(redis_url)
