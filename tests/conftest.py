"""Shared fixtures: a real Redis, a real trained model, a real gRPC server.

Redis: ``REDIS_URL`` when set (its database is FLUSHED before each test that uses it;
with pytest-xdist, worker N uses database N of that server), else an embedded
redis-server started once per session (per worker) on a free loopback port. A
Redis Cluster of our own (3 primaries, a replica each, from the same binary) for the
tests that run on a cluster, started once per session when the first of them needs it.
Tests of the service that are not about Redis run the same server on the in-memory store
(``memory``), which passes the same contract (tests/feature_store/test_store_contract.py).
"""

from __future__ import annotations

import importlib.util
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from arbiter.v1 import common_pb2, decision_pb2, profile_pb2
from engine.adapters import artifact, compiled
from engine.api.background import BackgroundServer
from engine.settings import (
    DEFAULTS,
    CommonSettings,
    Definitions,
    ServerSettings,
    load_definitions,
)
from feature_store.embedded import EmbeddedCluster, redis_or_embedded
from feature_store.loader import load_profiles, profile_fields
from feature_store.memory_store import MemoryStore
from training.settings import TrainerSettings
from training.synthetic_logs import simulate_logs
from training.train import train
from training.world import World, generate

T = TypeVar("T")

# Dask training is tested in the `dask` extra's environment (make test builds it); the
# main environment stays without scikit-learn, which would slow every server start-up.
collect_ignore = [] if importlib.util.find_spec("dask") else ["dask"]
WORLD_SIZE = 2000


@pytest.fixture(scope="session")
def redis_url(worker_id: str) -> Iterator[str]:
    url = CommonSettings().redis_url
    if url and worker_id != "master":  # pytest-xdist's workers: a database each
        url = _database(url, int(worker_id.removeprefix("gw")))
    with redis_or_embedded(url) as url:
        yield url


def _database(url: str, number: int) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{number}"))


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture(scope="session")
def cluster() -> Iterator[EmbeddedCluster]:
    with EmbeddedCluster(masters=3, replicas=1) as running:
        yield running


@pytest.fixture
def cluster_client(cluster: EmbeddedCluster) -> Iterator[redis.RedisCluster]:
    """A client of the embedded cluster, every primary flushed for this test."""
    cluster.wait_until_ok()  # a test before may have failed a node over
    client = redis.RedisCluster.from_url(cluster.url)
    client.flushdb(target_nodes=redis.RedisCluster.PRIMARIES)
    yield client
    client.close()


@pytest.fixture(params=["redis", "cluster"])
def redis_or_cluster(
    request: pytest.FixtureRequest, world: World, definitions: Definitions
) -> tuple[str, redis.Redis | redis.RedisCluster]:
    """The URL of a single Redis, then of the cluster, and a client of it: flushed and
    holding the test world's profiles."""
    if request.param == "redis":
        url, client = request.getfixturevalue("redis_url"), request.getfixturevalue("redis_client")
    else:
        url, client = (
            request.getfixturevalue("cluster").url,
            request.getfixturevalue("cluster_client"),
        )
    load_profiles(client, definitions.schema, world.profiles())
    return url, client


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
    model = train(logs, definitions.schema, definitions.catalog, TrainerSettings(num_trees=40))
    folder = tmp_path_factory.mktemp("data") / "models"
    saved = artifact.save(folder, model)
    # The servers of the tests score with compiled trees, as production does.
    compiled.compile_artifact(replace(model, folder=saved))
    return folder


@pytest.fixture
def loaded(redis_client: redis.Redis, world: World, definitions: Definitions) -> redis.Redis:
    """Redis holding the test world's profiles."""
    load_profiles(redis_client, definitions.schema, world.profiles())
    return redis_client


ServerThread = BackgroundServer  # tests call it by what it is to them


def report(
    server: ServerThread,
    decision: decision_pb2.DecideResponse,
    customer_id: str,
    outcome: common_pb2.Outcome.ValueType,
) -> None:
    """Reports the customer's answer to the decision's first action."""
    server.decisions.ReportOutcome(
        decision_pb2.ReportOutcomeRequest(
            decision_id=decision.decision_id,
            customer_id=customer_id,
            offer_id=decision.actions[0].offer_id,
            outcome=outcome,
        ),
        timeout=5,
    )


def record_event(
    server: ServerThread,
    customer_id: str,
    event_type: str,
    attributes: Mapping[str, str] | None = None,
    *,
    channel: common_pb2.Channel.ValueType = common_pb2.CHANNEL_WEB,
    metadata: tuple[tuple[str, str], ...] | None = None,
) -> None:
    """Records an event through the API (``RecordEvent``)."""
    server.profiles.RecordEvent(
        profile_pb2.RecordEventRequest(
            customer_id=customer_id,
            channel=channel,
            event_type=event_type,
            attributes=attributes or {},
        ),
        timeout=5,
        metadata=metadata,
    )


def accept(server: ServerThread, decision: decision_pb2.DecideResponse, customer_id: str) -> None:
    """Reports that the customer accepted the decision's first action."""
    report(server, decision, customer_id, common_pb2.OUTCOME_ACCEPT)


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of ``/metrics`` on ``port``: (name, labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (0 when none)."""
    wanted = set(labels.items())
    return sum(v for (n, have), v in samples.items() if n == name and wanted <= have)


def catalog_variant(path: Path, replacements: Mapping[str, str]) -> Path:
    """The demo catalog with each ``old`` text (which must be there) replaced by ``new``,
    written to ``path``."""
    text = (DEFAULTS / "catalog.toml").read_text()
    for old, new in replacements.items():
        assert old in text, old
        text = text.replace(old, new)
    path.write_text(text)
    return path


def zone_at(local_hour: int, now: float | None = None) -> str:
    """A fixed-offset time zone (``Etc/GMT-5`` is UTC+5) where it is now ``local_hour``
    o'clock, give or take the minutes."""
    offset = (local_hour - time.gmtime(now).tm_hour + 11) % 24 - 11  # -11 .. +12
    return "Etc/GMT" if offset == 0 else f"Etc/GMT{-offset:+d}"


@pytest.fixture(scope="session")
def daytime_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo catalog with its customers' default time zone where it is midday now, so
    that sends are not in quiet hours whenever the suite runs (tests about quiet hours
    choose their zones), choosing greedily: tests that assert a choice need it to be the
    best one (test_learner.py and test_adaptive.py explore as the demo does)."""
    return catalog_variant(
        tmp_path_factory.mktemp("catalog") / "catalog.toml",
        {
            'default_timezone = "Europe/London"': f'default_timezone = "{zone_at(12)}"',
            'policy = "thompson"': 'policy = "greedy"',
        },
    )


@pytest.fixture
def server_factory(model_dir: Path, daytime_catalog: Path) -> Iterator[Callable[..., ServerThread]]:
    started: list[ServerThread] = []

    def make(backend: str | MemoryStore, **overrides: Any) -> ServerThread:
        """A server on ``backend``: a Redis URL, or an in-memory store; the demo catalog
        in daytime unless ``catalog_path`` says otherwise; no always-on run goes over the
        customer base unless ``outbound_run_seconds`` says (test_outbound_runs.py holds
        their clock)."""
        defaults = {
            "data_dir": model_dir.parent,
            "port": 0,
            "catalog_path": daytime_catalog,
            "outbound_run_seconds": 0,
        }
        settings = ServerSettings(**{**defaults, **overrides})
        thread = ServerThread(settings, backend)
        started.append(thread)
        return thread

    yield make
    for thread in started:
        thread.stop()


@pytest.fixture
def memory(world: World, definitions: Definitions) -> MemoryStore:
    """An in-memory store holding the test world's profiles."""
    store = MemoryStore(definitions.schema)
    now = time.time()
    for customer_id, features, attributes in world.profiles():
        store.put_profile(
            customer_id, profile_fields(definitions.schema, features, attributes, now)
        )
    return store


@pytest.fixture
def server(
    server_factory: Callable[..., ServerThread], loaded: redis.Redis, redis_url: str
) -> ServerThread:
    """A server on Redis holding the test world."""
    return server_factory(redis_url)


@pytest.fixture
def memory_server(server_factory: Callable[..., ServerThread], memory: MemoryStore) -> ServerThread:
    """A server on an in-memory store holding the test world."""
    return server_factory(memory)
