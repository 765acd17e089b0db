"""Arbiter on a real Redis Cluster (3 primaries, a replica each, on loopback ports): the
URL of any node is enough, loads spread over every primary, and the whole API, the logs
and the CLI work on it. (The store contract and the caps across replicas run on the
cluster too: test_store_contract.py, test_contact_policy.py.)"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from arbiter.v1 import common_pb2, decision_pb2, profile_pb2
from common.errors import ConfigurationError
from common.ports import free_port
from engine.settings import Definitions
from feature_store import keys
from feature_store.embedded import EmbeddedCluster
from feature_store.loader import load_profiles
from feature_store.log_reader import read_logs
from feature_store.redis_client import aclose, cluster_mode, connect, connect_sync
from tests import conftest
from tests.conftest import ServerThread
from tests.feature_store.test_redis_store import record_while_stalled
from training.world import World

CUSTOMER = "cust-000042"


def test_any_node_s_url_is_enough_and_the_url_may_say(
    cluster: EmbeddedCluster, redis_url: str
) -> None:
    for node in cluster.nodes:  # replicas too: the client learns the layout from any
        url = f"redis://127.0.0.1:{node.port}/0"
        assert cluster_mode(url) == (url, True)
        assert isinstance(connect_sync(url), redis.RedisCluster)
    assert cluster_mode(redis_url)[1] is False
    assert cluster_mode(cluster.url + "?cluster=no") == (cluster.url, False)
    assert cluster_mode(redis_url + "?cluster=yes") == (redis_url, True)
    with pytest.raises(ConfigurationError, match="cluster='maybe'"):
        cluster_mode(cluster.url + "?cluster=maybe")


def test_an_unreachable_server_is_taken_for_one_server_and_its_password_never_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"redis://arbiter:s3cret-pw@127.0.0.1:{free_port()}/0"
    with caplog.at_level(logging.WARNING):
        assert cluster_mode(url) == (url, False)
    assert "?cluster=yes" in caplog.text
    assert "s3cret-pw" not in caplog.text


def test_profiles_load_across_every_primary(
    cluster: EmbeddedCluster,
    cluster_client: redis.RedisCluster,
    world: World,
    definitions: Definitions,
) -> None:
    written = load_profiles(connect_sync(cluster.url), definitions.schema, world.profiles())
    per_primary = [
        redis.Redis(host="127.0.0.1", port=node.port).dbsize() for node in cluster.primaries()
    ]
    assert written == len(list(world.profiles()))
    assert len(per_primary) == 3 and min(per_primary) > written / 6, per_primary
    assert sum(per_primary) == written


def test_arbiter_load_on_a_cluster(
    cluster: EmbeddedCluster, cluster_client: redis.RedisCluster, world: World, tmp_path: Path
) -> None:
    path = tmp_path / "profiles.jsonl"
    world.write_profiles(path)
    env = {**os.environ, "REDIS_URL": cluster.url, "ARBITER_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "training.cli", "load", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = sum(1 for line in path.read_text().splitlines() if line.strip())
    assert f"loaded {lines} profiles" in done.stdout
    assert cluster_client.exists(keys.customer_key(CUSTOMER, keys.PROFILE))


def test_the_whole_api_on_a_cluster(
    server_factory: Callable[..., ServerThread],
    cluster: EmbeddedCluster,
    cluster_client: redis.RedisCluster,
    world: World,
    definitions: Definitions,
) -> None:
    load_profiles(cluster_client, definitions.schema, world.profiles())
    server = server_factory(cluster.url)
    web = decision_pb2.DecideRequest(customer_id=CUSTOMER, channel=common_pb2.CHANNEL_WEB, limit=3)
    decided = server.decisions.Decide(web, timeout=5)
    assert decided.actions and not decided.degraded, decided.degraded_reason

    conftest.record_event(server, CUSTOMER, "product_view", {"category": "fibre"})
    conftest.accept(server, decided, CUSTOMER)
    server.flush_log()  # the decision history is written with the log, in the background
    profile = server.profiles.GetProfile(
        profile_pb2.GetProfileRequest(customer_id=CUSTOMER), timeout=5
    )
    assert [e.event_type for e in profile.recent_events] == ["product_view"]
    assert profile.recent_decisions[0].decision_id == decided.decision_id

    # A campaign: one pipelined read and one pipelined reservation over every node.
    customers = [f"cust-{n:06d}" for n in range(100, 160)]
    batch = list(
        server.decisions.DecideBatch(
            (
                decision_pb2.DecideBatchRequest(
                    request=decision_pb2.DecideRequest(
                        customer_id=c, channel=common_pb2.CHANNEL_EMAIL, limit=1
                    )
                )
                for c in customers
            ),
            timeout=60,
        )
    )
    assert [b.customer_id for b in batch] == customers
    assert not any(b.response.degraded for b in batch)
    assert sum(1 for b in batch if b.response.actions) > len(customers) / 2

    server.flush_log()
    decisions, outcomes = read_logs(connect_sync(cluster.url))
    assert len(decisions) == 1 + len(customers)
    assert [(o["decision_id"], o["outcome"]) for o in outcomes] == [(decided.decision_id, "accept")]

    forgotten = server.profiles.ForgetCustomer(
        profile_pb2.ForgetCustomerRequest(customer_id=CUSTOMER), timeout=10
    )
    assert "profile" in forgotten.removed and forgotten.idempotency_keys == 1
    assert forgotten.decision_log_entries == 1 and forgotten.outcome_log_entries == 1
    assert not cluster_client.exists(keys.customer_key(CUSTOMER, keys.PROFILE))


def _owner(cluster: EmbeddedCluster, key: str) -> int:
    """The port of the primary serving ``key`` now."""
    client = redis.RedisCluster.from_url(cluster.url)
    try:
        slot = key_slot(key.encode())
        return int(client.nodes_manager.get_node_from_slot(slot).port)
    finally:
        client.close()


def _caught_up(port: int) -> bool:
    """Every replica of the primary on ``port`` has all it wrote."""
    info = redis.Redis(host="127.0.0.1", port=port).info("replication")
    replicas = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
    return bool(replicas) and all(r["offset"] == info["master_repl_offset"] for r in replicas)


def test_each_primary_has_a_breaker_of_its_own(
    server_factory: Callable[..., ServerThread],
    cluster: EmbeddedCluster,
    world: World,
    definitions: Definitions,
) -> None:
    load_profiles(connect_sync(cluster.url), definitions.schema, world.profiles())
    server = server_factory(cluster.url)
    decide = server.decisions.Decide
    decide(decision_pb2.DecideRequest(customer_id=CUSTOMER, channel=common_pb2.CHANNEL_WEB))
    application = server.application
    customers = [f"cust-{n:06d}" for n in range(1, 301)]
    breakers = {c: application.guard.breaker_for(c) for c in customers}
    assert len({id(b) for b in breakers.values()}) == 3  # one per primary
    assert application.guard.breaker not in breakers.values()
    owner = {c: _owner(cluster, keys.customer_key(c, keys.REALTIME)) for c in customers[:20]}
    for a in owner:  # the same primary, the same breaker; another primary, another one
        for b in owner:
            assert (owner[a] == owner[b]) == (breakers[a] is breakers[b])
    # One primary's failure opens its own breaker: the others' customers still try.
    victim = breakers[customers[0]]
    victim.failed("feature store read failed")
    others = [c for c in customers if breakers[c] is not victim]
    assert application.guard.breaker_for(customers[0]).refusal() == "feature store read failed"
    assert all(application.guard.breaker_for(c).refusal() == "" for c in others)


def test_a_primary_dies_its_replica_takes_over_and_nothing_is_lost(
    server_factory: Callable[..., ServerThread], world: World, definitions: Definitions
) -> None:
    """SIGKILL the primary of a customer's slot: decisions for that customer degrade (no
    error reaches the caller), then come back whole once the replica is promoted; the
    events acknowledged before are all there, and new ones land on the new primary.
    (Redis replicates asynchronously: a write acknowledged in the last moment before a
    primary dies can be lost by Redis itself; the test lets the replica catch up first.)"""
    with EmbeddedCluster(masters=3, replicas=1, node_timeout_ms=1000) as cluster:
        load_profiles(connect_sync(cluster.url), definitions.schema, world.profiles())
        server = server_factory(cluster.url, breaker_seconds=0.2)

        def decide() -> decision_pb2.DecideResponse:
            request = decision_pb2.DecideRequest(
                customer_id=CUSTOMER, channel=common_pb2.CHANNEL_WEB, limit=3
            )
            return server.decisions.Decide(request, timeout=5)

        before = [f"before_{n}" for n in range(20)]
        for kind in before:
            conftest.record_event(server, CUSTOMER, kind)
        assert not decide().degraded
        port = _owner(cluster, keys.customer_key(CUSTOMER, keys.REALTIME))
        deadline = time.monotonic() + 10
        while not _caught_up(port):
            assert time.monotonic() < deadline, "the replica never caught up"
            time.sleep(0.01)
        next(n for n in cluster.nodes if n.port == port).kill()

        answers = []
        deadline = time.monotonic() + 30
        while True:
            answer = decide()  # never an error: degraded while there is no primary
            answers.append(answer)
            if not answer.degraded:
                break
            assert time.monotonic() < deadline, answer.degraded_reason
            time.sleep(0.05)
        assert answers[0].degraded and answers[0].actions
        assert _owner(cluster, keys.customer_key(CUSTOMER, keys.REALTIME)) != port

        conftest.record_event(server, CUSTOMER, "after")
        profile = server.profiles.GetProfile(
            profile_pb2.GetProfileRequest(customer_id=CUSTOMER), timeout=5
        )
        seen = [e.event_type for e in profile.recent_events]
        assert seen == ["after", *reversed(before)]


def test_a_write_that_timed_out_is_not_sent_again_on_a_cluster(
    cluster: EmbeddedCluster, cluster_client: redis.RedisCluster, definitions: Definitions
) -> None:
    """As on one server (test_redis_store.py): the cluster client retries a command whose
    reply timed out by default, which would count the event twice."""
    port = _owner(cluster, keys.customer_key("c-stalled", keys.REALTIME))
    node = next(n for n in cluster.nodes if n.port == port)
    assert node.pid is not None
    said, counted = record_while_stalled(cluster.url, node.pid, definitions, 0.15)
    assert counted == 1, said


def test_a_burst_over_the_pool_queues_for_a_connection_instead_of_failing(
    cluster: EmbeddedCluster, cluster_client: redis.RedisCluster
) -> None:
    # redis-py's asyncio cluster client fails a command at once when its node's pool is in
    # use (MaxConnectionsError); a burst of events for one customer would lose some. Two
    # connections a node and 100 commands at once, pipelines among them, on one node:
    # every one waits its turn and succeeds.
    async def burst() -> list[Any]:
        client = connect(cluster.url, max_connections=2)
        try:
            key = keys.customer_key(CUSTOMER, "burst")

            async def piped(i: int) -> list[Any]:
                pipe = client.pipeline(transaction=False)
                pipe.incr(key)
                pipe.get(key)
                replies: list[Any] = await pipe.execute()
                return replies

            done: list[Any] = await asyncio.gather(
                *(client.incr(key) if i % 4 else piped(i) for i in range(100))
            )
            return done
        finally:
            await aclose(client)

    results = asyncio.run(burst())
    assert len(results) == 100
    assert int(cluster_client.get(keys.customer_key(CUSTOMER, "burst")) or 0) == 100
