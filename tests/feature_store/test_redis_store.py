"""What only the Redis store has to show (the shared contract is test_store_contract.py):
expiry, bounded storage, the stored bytes, and a Redis that does not answer."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from typing import Any

import redis

from arbiter.v1 import common_pb2, decision_pb2
from common.errors import FeatureStoreUnavailable, Unavailable
from engine.core.customer import OutcomeEffects
from engine.settings import Definitions
from feature_store import keys, redis_store
from feature_store.embedded import EmbeddedRedis
from feature_store.redis_client import connect, connect_sync
from feature_store.store import EventRecord, LoggedDecision, OutcomeRecord
from tests.conftest import ServerThread


def run(
    redis_url: str,
    definitions: Definitions,
    work: Any,
    *,
    timeout: float = 0.25,
    events_per_second: int = 20,
) -> Any:
    async def main() -> Any:
        client = connect(redis_url, timeout_seconds=timeout)
        try:
            store = redis_store.RedisFeatureStore(
                client, definitions.schema, events_per_second=events_per_second
            )
            return await work(store)
        finally:
            await client.aclose()

    return asyncio.run(main())


def test_realtime_state_expires_and_ring_slots_stay_bounded(
    redis_client: redis.Redis, redis_url: str, definitions: Definitions
) -> None:
    now = time.time()

    async def work(store: redis_store.RedisFeatureStore) -> None:
        for age in range(0, 40 * 86400, 1800):  # an event every half hour for 40 days
            await store.record_event(
                EventRecord("c1", "web", "product_view", {"category": "fibre"}, now - age)
            )

    run(redis_url, definitions, work, timeout=5.0, events_per_second=10_000)
    for kind in (keys.REALTIME, keys.WINDOWS, keys.EVENTS):
        ttl = redis_client.ttl(keys.customer_key("c1", kind))
        assert 0 < ttl <= definitions.schema.realtime_ttl_seconds, kind
    assert 0 < redis_client.ttl(keys.customer_key("c1", keys.SESSION)) <= 1800
    # three counter names (e:, c:, k:), each at most 12 + 24 + 7 ring slots
    assert redis_client.hlen(keys.customer_key("c1", keys.WINDOWS)) <= 3 * (12 + 24 + 7)
    assert redis_client.llen(keys.customer_key("c1", keys.EVENTS)) == 50


def test_an_outcome_is_stored_as_documented(
    redis_client: redis.Redis, redis_url: str, definitions: Definitions
) -> None:
    now = time.time()
    outcome = OutcomeRecord("c3", "d1", "fibre_broadband", "accept", 10.0, now, "key-1")

    async def work(store: redis_store.RedisFeatureStore) -> Any:
        return await store.record_outcome(outcome, OutcomeEffects(suppress=True))

    recorded, log_id = run(redis_url, definitions, work)
    assert recorded
    assert redis_client.get(keys.idempotency_key("c3", "key-1")) == log_id.encode()
    assert redis_client.xlen(keys.outcome_log(keys.log_shard("c3"))) == 1
    (stored,) = redis_client.lrange(keys.customer_key("c3", keys.OUTCOMES), 0, -1)
    assert json.loads(stored)["offer_id"] == "fibre_broadband"
    policy = keys.customer_key("c3", keys.POLICY)
    assert float(redis_client.hget(policy, "held:fibre_broadband") or 0) == now
    assert 0 < redis_client.ttl(policy) <= redis_store.POLICY_TTL_SECONDS


def test_unreachable_redis_is_feature_store_unavailable(definitions: Definitions) -> None:
    for work in (
        lambda s: s.fetch("c5"),
        lambda s: s.record_event(EventRecord("c5", "web", "page_view", {}, 1.0)),
        lambda s: s.read_decisions(),
    ):
        try:
            run("redis://127.0.0.1:1/0", definitions, work)
        except FeatureStoreUnavailable as exc:
            assert "failed" in str(exc)
        else:
            raise AssertionError("no error from a Redis that is not there")


def test_a_report_that_died_before_the_log_is_appended_by_the_next(
    redis_client: redis.Redis, redis_url: str, definitions: Definitions
) -> None:
    now = time.time()
    # One attempt took its lease and died before appending; another's lease is still live.
    redis_client.set(keys.idempotency_key("c9", "lapsed"), f"pending:dead:{now - 1}")
    redis_client.set(keys.idempotency_key("c9", "live"), f"pending:other:{now + 60}")
    redis_client.set(keys.idempotency_key("c9", "old"), "pending")  # before leases

    async def work(store: redis_store.RedisFeatureStore) -> Any:
        out: list[Any] = []
        for key in ("lapsed", "live", "old"):
            try:
                out.append(
                    await store.record_outcome(
                        OutcomeRecord("c9", "d1", "a", "click", 0.0, now, key), OutcomeEffects()
                    )
                )
            except Unavailable as exc:
                out.append(exc)
        return out

    (lapsed, lapsed_id), live, (old, _) = run(redis_url, definitions, work)
    assert lapsed and lapsed_id and old
    # a report still being written (or cut off, its lease not yet lapsed): not a
    # duplicate to forget, a call to retry, which logs it once the lease lapses
    assert isinstance(live, Unavailable) and "retry" in str(live)
    assert redis_client.get(keys.idempotency_key("c9", "lapsed")) == lapsed_id.encode()
    assert redis_client.xlen(keys.outcome_log(keys.log_shard("c9"))) == 2
    # the effects of the dead attempt were its own: not applied a second time
    assert redis_client.hget(keys.customer_key("c9", keys.REALTIME), "o:click") is None


def test_the_logs_keep_their_retention(
    redis_client: redis.Redis, redis_url: str, definitions: Definitions
) -> None:
    def logged(n: int) -> LoggedDecision:
        return LoggedDecision("c1", {"decision_id": f"d{n}"}, {"decision_id": f"d{n}"})

    async def work(store: redis_store.RedisFeatureStore) -> Any:
        await store.append_decisions([logged(1), logged(2)])
        await asyncio.sleep(1.1)
        await store.append_decisions([logged(3)])
        return await store.read_decisions()

    async def main() -> Any:
        client = connect(redis_url)
        try:
            store = redis_store.RedisFeatureStore(
                client, definitions.schema, log_retention_seconds=1.0
            )
            return await work(store)
        finally:
            await client.aclose()

    assert [e["decision_id"] for e in asyncio.run(main())] == ["d3"]


def test_a_logged_decision_takes_about_a_kilobyte(
    server: ServerThread, loaded: redis.Redis
) -> None:
    def decide(customers: range) -> int:
        for n in customers:
            request = decision_pb2.DecideRequest(
                customer_id=f"cust-{n:06d}", channel=common_pb2.CHANNEL_WEB, limit=3
            )
            server.decisions.Decide(request, timeout=5)
        server.flush_log()
        return sum(loaded.memory_usage(k) or 0 for k in keys.decision_logs())

    # What a decision adds, past the 16 streams' own fixed cost (~100 B a decision at 300)
    first = decide(range(1, 101))
    per_decision = (decide(range(101, 401)) - first) / 300
    assert 100 < per_decision <= 1024, per_decision
    decisions = server.read_decisions()
    assert len(decisions) == 400  # and it reads back whole, in time order
    assert [d["ts"] for d in decisions] == sorted(d["ts"] for d in decisions)
    # No stream takes every write: 400 customers over the 16 shards.
    lengths = [loaded.xlen(keys.decision_log(s)) for s in range(keys.LOG_SHARDS)]
    assert min(lengths) > 0 and max(lengths) < 400 / keys.LOG_SHARDS * 2.5, lengths


def test_entries_of_the_single_stream_of_earlier_versions_are_still_read(
    redis_client: redis.Redis, redis_url: str, definitions: Definitions
) -> None:
    """A deployment upgraded from the single stream keeps its logged decisions: they are
    read (merged in time order with the shards), trimmed and forgotten like the rest."""
    an_hour_ago = time.time() - 3600
    old = {"decision_id": "d-old", "customer_id": "c1", "ts": an_hour_ago}
    redis_client.xadd(
        keys.LEGACY_DECISION_LOG,
        {keys.DECISION_FIELD: json.dumps(old)},
        id=f"{int(an_hour_ago * 1000)}-0",
    )

    async def work(store: redis_store.RedisFeatureStore) -> Any:
        await store.append_decisions(
            [LoggedDecision("c1", {"decision_id": "d-new", "customer_id": "c1"}, {})]
        )
        read = await store.read_decisions()
        return read, await store.forget("c1")

    read, forgotten = run(redis_url, definitions, work)
    assert [d["decision_id"] for d in read] == ["d-old", "d-new"]
    assert forgotten.decision_log_entries == 2
    assert redis_client.xlen(keys.LEGACY_DECISION_LOG) == 0


def record_while_stalled(
    url: str, pid: int, definitions: Definitions, stall: float
) -> tuple[str, int]:
    """One event recorded while the redis-server ``pid`` is stopped for ``stall`` seconds,
    longer than the client's socket timeout (0.1 s): what the call said, and how many
    times the event counted once Redis had run what it was sent."""
    customer = "c-stalled"

    async def main() -> str:
        client = connect(url, timeout_seconds=0.1)
        store = redis_store.RedisFeatureStore(client, definitions.schema)
        try:
            # Connected, scripts loaded: only the stall is new (a busy machine may miss the
            # 0.1 s timeout once while connecting: try again).
            for attempt in range(20):
                try:
                    await store.fetch(customer)
                    break
                except FeatureStoreUnavailable:
                    if attempt == 19:
                        raise
                    await asyncio.sleep(0.05)
            os.kill(pid, signal.SIGSTOP)
            asyncio.get_running_loop().call_later(stall, os.kill, pid, signal.SIGCONT)
            try:
                await store.record_event(EventRecord(customer, "web", "page_view", {}, 1.0))
                said = "recorded"
            except FeatureStoreUnavailable:
                said = "unavailable"
            await asyncio.sleep(0.6)  # resumed: it runs what is in its socket
            return said
        finally:
            os.kill(pid, signal.SIGCONT)
            await store.aclose()

    said = asyncio.run(main())
    counted = connect_sync(url).hget(keys.customer_key(customer, keys.REALTIME), "n:page_view")
    return said, int(counted or 0)


def test_a_write_that_timed_out_is_not_sent_again(definitions: Definitions) -> None:
    """The event may have run when its reply timed out: sending it again would count it
    twice once Redis resumes (redis-py retries a timed-out command by default)."""
    with EmbeddedRedis() as own:
        assert own.pid is not None
        # 0.15 s: resumed after the timeout, in time for a retry's new connection (before:
        # "recorded", counted 2 with stalls of 0.13-0.17 s)
        said, counted = record_while_stalled(own.url, own.pid, definitions, 0.15)
    # Once, whatever the caller heard (UNAVAILABLE after the timeout, as a rule; "recorded"
    # only if a starved event loop read the late reply first).
    assert counted == 1, said
