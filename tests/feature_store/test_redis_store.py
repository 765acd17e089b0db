"""The Redis adapter against a real Redis."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, TypeVar

import pytest
import redis

from common.errors import FeatureStoreUnavailable, ProfileSchemaMismatch
from engine.settings import Definitions
from feature_store import keys, redis_store
from feature_store.loader import load_profiles
from feature_store.redis_client import connect
from feature_store.store import EventRecord, OutcomeEffects, OutcomeRecord, Reservation

T = TypeVar("T")


def run(redis_url: str, definitions: Definitions, work: Any, *, timeout: float = 0.25) -> Any:
    async def main() -> Any:
        client = connect(redis_url, timeout_seconds=timeout)
        try:
            return await work(redis_store.RedisFeatureStore(client, definitions.schema))
        finally:
            await client.aclose()

    return asyncio.run(main())


def test_fetch_unknown_customer_gives_defaults(
    redis_client: redis.Redis, redis_url: str, definitions: Definitions
) -> None:
    record = run(redis_url, definitions, lambda s: s.fetch("nobody"))
    assert not record.known
    assert record.batch.tolist() == pytest.approx([f.default for f in definitions.schema.batch])
    assert record.attributes == {} and record.realtime == {}


def test_fetch_reads_profile_and_realtime_state(
    redis_client: redis.Redis, redis_url: str, definitions: Definitions
) -> None:
    load_profiles(
        redis_client, definitions.schema, [("c1", {"tenure_months": 12}, {"region": "North"})]
    )

    async def work(store: redis_store.RedisFeatureStore) -> Any:
        await store.record_event(
            EventRecord("c1", "web", "product_view", {"category": "fibre"}, 1000.0)
        )
        await store.record_event(EventRecord("c1", "mobile_app", "product_view", {}, 1010.0))
        return await store.fetch("c1")

    record = run(redis_url, definitions, work)
    assert record.known
    assert record.attributes == {"region": "North"}
    assert record.batch[[f.name for f in definitions.schema.batch].index("tenure_months")] == 12
    assert record.realtime == {
        "n:product_view": "2",
        "c:web": "1",
        "c:mobile_app": "1",
        "ts:last_seen": "1010.0",
        "ts:product_view": "1010.0",
        "last_category": "fibre",
    }
    ttl = redis_client.ttl(keys.customer_key("c1", keys.REALTIME))
    assert 0 < ttl <= definitions.schema.realtime_ttl_seconds


def test_concurrent_events_are_all_counted(
    redis_client: redis.Redis, redis_url: str, definitions: Definitions
) -> None:
    async def work(store: redis_store.RedisFeatureStore) -> Any:
        await asyncio.gather(
            *(
                store.record_event(EventRecord("c2", "web", "page_view", {}, 1.0 + i))
                for i in range(200)
            )
        )
        return await store.fetch("c2")

    # 200 calls queue for 64 connections: on a loaded machine the last ones can wait longer
    # than the service's fail-fast budget, which is not what this test is about.
    assert run(redis_url, definitions, work, timeout=5.0).realtime["n:page_view"] == "200"
    assert (
        redis_client.llen(keys.customer_key("c2", keys.EVENTS)) == definitions.schema.recent_events
    )


def test_outcome_idempotency(
    redis_client: redis.Redis, redis_url: str, definitions: Definitions
) -> None:
    now = time.time()
    outcome = OutcomeRecord("c3", "d1", "fibre_broadband", "accept", 10.0, now, "key-1")

    effects = OutcomeEffects(cooldown_until=0.0, suppress=True, impression=True)

    async def work(store: redis_store.RedisFeatureStore) -> Any:
        return [await store.record_outcome(outcome, effects) for _ in range(3)]

    results = run(redis_url, definitions, work)
    assert [r[0] for r in results] == [True, False, False]
    assert len({r[1] for r in results}) == 1
    assert redis_client.xlen(keys.OUTCOME_LOG) == 1
    assert redis_client.hget(keys.customer_key("c3", keys.REALTIME), "o:accept") == b"1"
    (stored,) = redis_client.lrange(keys.customer_key("c3", keys.OUTCOMES), 0, -1)
    assert json.loads(stored)["offer_id"] == "fibre_broadband"
    record = run(redis_url, definitions, lambda s: s.fetch("c3"))
    assert record.policy == {"held:fibre_broadband": pytest.approx(now)}
    assert [(c.decision_id, c.offer_id, c.channel) for c in record.contacts] == [
        ("d1", "fibre_broadband", "")  # counted once, though reported three times
    ]
    assert record.windows["o:accept"] == (1.0, 1.0, 1.0)


def test_profile_written_with_another_schema_is_refused(
    redis_client: redis.Redis, redis_url: str, definitions: Definitions
) -> None:
    load_profiles(redis_client, definitions.schema, [("c4", {}, {})])
    redis_client.hset(keys.customer_key("c4", keys.PROFILE), "s", "oldschema")
    with pytest.raises(ProfileSchemaMismatch, match="reload profiles"):
        run(redis_url, definitions, lambda s: s.fetch("c4"))


def test_unreachable_redis_is_feature_store_unavailable(definitions: Definitions) -> None:
    with pytest.raises(FeatureStoreUnavailable):
        run("redis://127.0.0.1:1/0", definitions, lambda s: s.fetch("c5"))


def test_windowed_counts_slide_and_sessions_end(
    redis_client: redis.Redis, redis_url: str, definitions: Definitions
) -> None:
    now = time.time()
    ages = [10, 100, 2 * 3600, 5 * 3600, 2 * 86400, 9 * 86400]  # seconds before now

    async def work(store: redis_store.RedisFeatureStore) -> Any:
        for age in ages:
            await store.record_event(
                EventRecord("c6", "web", "product_view", {"category": "fibre"}, now - age)
            )
        return await store.fetch("c6", now)

    async def later(store: redis_store.RedisFeatureStore) -> Any:
        return await store.fetch("c6", now + 3 * 3600)

    record = run(redis_url, definitions, work)
    # 1 h: the two events within the hour; 24 h: four; 7 d: five (9 days is out).
    assert record.windows["e:product_view"] == (2.0, 4.0, 5.0)
    assert record.windows["k:fibre"] == (2.0, 4.0, 5.0)
    assert record.windows["e:product_view:fibre"] == (2.0, 4.0, 5.0)
    assert record.windows["c:web"] == (2.0, 4.0, 5.0)
    assert record.realtime["n:product_view"] == "6"
    assert record.realtime["ts:last_seen"] == repr(now - 10)  # an older event never regresses it
    vector = definitions.schema.customer_vector(record, now)
    named = dict(zip(definitions.schema.names, vector.tolist(), strict=True))
    assert named["product_views_24h"] == 4 and named["web_events_7d"] == 5
    assert named["session_product_views"] == 6  # one session: no gap was checked server-side
    # Three hours on, the window has slid: nothing in the last hour, and 24 h lost none.
    assert run(redis_url, definitions, later).windows["e:product_view"] == (0.0, 4.0, 5.0)
    fields = redis_client.hlen("arb:{c6}:win")
    assert fields <= 4 * (12 + 24 + 7)  # four counter names, ring slots bounded


def test_the_session_ends_after_the_gap(
    redis_client: redis.Redis, redis_url: str, definitions: Definitions
) -> None:
    async def work() -> Any:
        client = connect(redis_url)
        store = redis_store.RedisFeatureStore(client, definitions.schema, session_seconds=1)
        try:
            await store.record_event(EventRecord("c7", "web", "compare", {}, time.time()))
            during = await store.fetch("c7")
            await asyncio.sleep(1.2)
            after = await store.fetch("c7")
            return during, after
        finally:
            await client.aclose()

    during, after = asyncio.run(work())
    assert during.session["e:compare"] == "1"
    assert after.session == {}
    assert after.windows["e:compare"][1] == 1.0  # the day still counts it


def test_reservations_respect_caps(
    redis_client: redis.Redis, redis_url: str, definitions: Definitions
) -> None:
    caps = ((86400, 2),)

    async def work(store: redis_store.RedisFeatureStore) -> Any:
        results = []
        for i in range(3):
            results.append(
                await store.reserve(
                    Reservation(
                        "c8",
                        f"d{i}",
                        "sms",
                        True,
                        0.0,
                        caps,
                        (("a", (), False), ("b", ((3600, 1),), False), ("c", (), True)),
                    )
                )
            )
        return results

    # The channel allows two sends a day; offer b once an hour; c is already held.
    redis_client.hset("arb:{c8}:policy", "held:c", 1.0)
    assert run(redis_url, definitions, work) == [["a", "b"], ["a"], []]
