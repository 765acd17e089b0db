"""One contract, two stores: the in-memory reference and Redis answer every call alike.

Each test drives a store only through the FeatureStore and DecisionLog protocols (plus
loading a profile the way each backend loads one), so a third backend gets its test
suite by adding a parameter. Redis-only matters (TTLs, bounded ring slots, the bytes of
keys, a Redis that is down) stay in test_redis_store.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import replace
from typing import Any

import pytest

from common.errors import ProfileSchemaMismatch, RateLimited
from engine.core.customer import OutcomeEffects, Reservation
from engine.settings import Definitions
from feature_store import keys
from feature_store.hot_redis import connect_hot
from feature_store.loader import profile_fields
from feature_store.memory_store import MemoryStore
from feature_store.redis_client import SyncClient, cluster_mode, connect
from feature_store.redis_store import RedisFeatureStore
from feature_store.store import (
    DecisionLog,
    EventRecord,
    FeatureStore,
    Forgotten,
    LoggedDecision,
    OutcomeRecord,
)


class Store(FeatureStore, DecisionLog):
    """What the contract covers."""


Work = Callable[[Any], Awaitable[Any]]


class Backend:
    """Runs work against a fresh store of one kind and loads profiles into it."""

    def __init__(
        self,
        definitions: Definitions,
        client: SyncClient | None = None,
        url: str = "",
        *,
        hot: bool = False,
    ) -> None:
        """``hot``: the decision path's read and reservation on the hot connection."""
        self.schema = definitions.schema
        self._client = client
        self._url = url
        self._hot = hot
        self._memory = MemoryStore(self.schema)
        self._session_seconds = 1800
        self._events_per_second = 20

    def with_session_seconds(self, seconds: int) -> Backend:
        self._session_seconds = seconds
        self._memory = MemoryStore(self.schema, session_seconds=seconds)
        return self

    def with_event_rate(self, per_second: int) -> Backend:
        self._events_per_second = per_second
        self._memory = MemoryStore(self.schema, events_per_second=per_second)
        return self

    def put_profile(
        self, customer_id: str, features: Mapping[str, float], attributes: Mapping[str, str]
    ) -> None:
        fields = profile_fields(self.schema, features, attributes, time.time())
        self.put_fields(customer_id, fields)

    def put_fields(self, customer_id: str, fields: Mapping[bytes, bytes]) -> None:
        if self._client is None:
            self._memory.put_profile(customer_id, fields)
        else:
            key = keys.customer_key(customer_id, keys.PROFILE)
            self._client.hset(key, mapping=dict(fields))  # type: ignore[arg-type]

    def run(self, work: Work) -> Any:
        async def main() -> Any:
            if self._client is None:
                return await work(self._memory)
            client = connect(self._url, timeout_seconds=5)
            plain, cluster = cluster_mode(self._url)
            hot = connect_hot(plain, cluster=cluster, timeout_seconds=5) if self._hot else None
            try:
                store = RedisFeatureStore(
                    client,
                    self.schema,
                    session_seconds=self._session_seconds,
                    events_per_second=self._events_per_second,
                    hot=hot,
                )
                return await work(store)
            finally:
                await store.aclose()

        return asyncio.run(main())


@pytest.fixture(params=["memory", "redis", "redis-hot", "cluster", "cluster-hot"])
def backend(request: pytest.FixtureRequest, definitions: Definitions) -> Iterator[Backend]:
    if request.param == "memory":
        yield Backend(definitions)
    elif request.param.startswith("redis"):
        client = request.getfixturevalue("redis_client")  # flushed for this test
        url = request.getfixturevalue("redis_url")
        yield Backend(definitions, client, url, hot=request.param == "redis-hot")
    else:
        client = request.getfixturevalue("cluster_client")  # flushed for this test
        url = request.getfixturevalue("cluster").url
        yield Backend(definitions, client, url, hot=request.param == "cluster-hot")


def test_an_unknown_customer_is_defaults(backend: Backend) -> None:
    record = backend.run(lambda s: s.fetch("nobody"))
    assert not record.known
    assert record.batch.tolist() == pytest.approx([f.default for f in backend.schema.batch])
    assert record.attributes == {} and record.realtime == {} and record.windows == {}
    assert record.contacts == () and record.pending == ()
    assert record.cooldowns == {} and record.held == {} and record.last_category == ""


def test_profile_and_events_are_read_back(backend: Backend) -> None:
    backend.put_profile("c1", {"tenure_months": 12}, {"region": "North"})

    async def work(store: Store) -> Any:
        await store.record_event(
            EventRecord("c1", "web", "product_view", {"category": "fibre"}, 1000.0)
        )
        await store.record_event(EventRecord("c1", "mobile_app", "product_view", {}, 1010.0))
        return await store.fetch("c1", 1020.0), await store.history("c1")

    record, history = backend.run(work)
    assert record.known and record.attributes == {"region": "North"}
    assert record.batch[[f.name for f in backend.schema.batch].index("tenure_months")] == 12
    assert record.realtime == {
        "n:product_view": "2",
        "c:web": "1",
        "c:mobile_app": "1",
        "ts:last_seen": "1010.0",
        "ts:product_view": "1010.0",
    }
    assert record.last_category == "fibre"  # the latest event with a category
    assert record.windows["e:product_view"] == (2.0, 2.0, 2.0)
    assert record.windows["k:fibre"] == (1.0, 1.0, 1.0)
    assert [e["channel"] for e in history.events] == ["mobile_app", "web"]  # newest first
    assert history.events[1]["attributes"] == {"category": "fibre"}


def test_concurrent_events_are_all_counted_and_the_event_list_is_capped(
    backend: Backend,
) -> None:
    async def work(store: Store) -> Any:
        await asyncio.gather(
            *(
                store.record_event(EventRecord("c2", "web", "page_view", {}, 1.0 + i))
                for i in range(200)
            )
        )
        return await store.fetch("c2"), await store.history("c2")

    record, history = backend.with_event_rate(1000).run(work)
    assert record.realtime["n:page_view"] == "200"
    assert len(history.events) == backend.schema.recent_events


def test_an_event_sent_again_under_its_key_is_recorded_once(backend: Backend) -> None:
    """The same idempotency key, at once and later: one event; no key, or another key:
    events of their own. A duplicate does not count against the customer's rate."""

    def event(key: str) -> EventRecord:
        return EventRecord("c21", "web", "add_to_cart", {}, 1000.0, idempotency_key=key)

    async def work(store: Store) -> Any:
        await asyncio.gather(*(store.record_event(event("k-1")) for _ in range(20)))
        await store.record_event(event("k-1"))
        await store.record_event(event("k-2"))
        await store.record_event(event(""))
        for _ in range(10):  # past the rate (5 a second) were they counted
            await store.record_event(event("k-2"))
        return await store.fetch("c21"), await store.history("c21")

    record, history = backend.with_event_rate(5).run(work)
    assert record.realtime["n:add_to_cart"] == "3"
    assert len(history.events) == 3


def test_windows_slide_and_an_old_event_never_moves_last_seen_back(backend: Backend) -> None:
    now = time.time()
    ages = [10, 100, 2 * 3600, 5 * 3600, 2 * 86400, 9 * 86400]  # seconds before now

    async def work(store: Store) -> Any:
        for age in ages:
            await store.record_event(
                EventRecord("c6", "web", "product_view", {"category": "fibre"}, now - age)
            )
        return await store.fetch("c6", now), await store.fetch("c6", now + 3 * 3600)

    record, later = backend.run(work)
    # 1 h: the two events within the hour; 24 h: four; 7 d: five (9 days is out).
    for name in ("e:product_view", "k:fibre", "c:web"):
        assert record.windows[name] == (2.0, 4.0, 5.0), name
    # no feature of the schema reads an event type x category pair: none is counted
    assert "e:product_view:fibre" not in record.windows
    assert record.realtime["ts:last_seen"] == repr(now - 10)
    assert record.session["e:product_view"] == "6"
    assert later.windows["e:product_view"] == (0.0, 4.0, 5.0)


def test_the_session_ends_after_the_gap(backend: Backend) -> None:
    async def work(store: Store) -> Any:
        await store.record_event(EventRecord("c7", "web", "compare", {}, time.time()))
        during = await store.fetch("c7")
        await asyncio.sleep(1.2)
        return during, await store.fetch("c7")

    during, after = backend.with_session_seconds(1).run(work)
    assert during.session["e:compare"] == "1"
    assert after.session == {}
    assert after.windows["e:compare"][1] == 1.0  # the day still counts it


def test_a_profile_of_another_schema_is_refused(backend: Backend) -> None:
    fields = dict(profile_fields(backend.schema, {}, {}, time.time()))
    fields[keys.FIELD_SCHEMA] = b"oldschema"
    backend.put_fields("c4", fields)
    backend.put_profile("c5", {}, {})

    async def work(store: Store) -> Any:
        many = await store.fetch_many(["c4", "c5"], time.time())
        with pytest.raises(ProfileSchemaMismatch, match="reload profiles"):
            await store.fetch("c4")
        return many

    mismatch, fine = backend.run(work)
    assert isinstance(mismatch, ProfileSchemaMismatch)
    assert not isinstance(fine, Exception) and fine.known


def test_an_outcome_is_recorded_once_per_key_and_its_effects_apply(backend: Backend) -> None:
    now = time.time()
    accept = OutcomeRecord("c3", "d1", "fibre", "accept", 10.0, now, "key-1")
    decline = OutcomeRecord("c3", "d1", "roaming", "decline", 0.0, now, "key-2")
    held = OutcomeEffects(suppress=True, impression=True)
    cool = OutcomeEffects(cooldown_until=now + 100, impression=True)

    async def work(store: Store) -> Any:
        results = [await store.record_outcome(accept, held) for _ in range(3)]
        results.append(await store.record_outcome(decline, cool))
        record = await store.fetch("c3")
        return results, record, await store.read_outcomes(), await store.history("c3")

    results, record, logged, history = backend.run(work)
    assert [r[0] for r in results] == [True, False, False, True]
    assert results[0][1] == results[1][1] == results[2][1] != results[3][1]
    assert [o["idempotency_key"] for o in logged] == ["key-1", "key-2"]
    assert logged[0]["customer_id"] == "c3" and logged[0]["value"] == 10.0
    assert record.realtime["o:accept"] == "1" and record.windows["o:accept"] == (1.0, 1.0, 1.0)
    assert record.held == {"fibre": pytest.approx(now)}
    assert record.cooldowns == {"roaming": now + 100}
    assert sorted((c.decision_id, c.offer_id, c.channel) for c in record.contacts) == [
        ("d1", "fibre", ""),  # counted once, though reported three times
        ("d1", "roaming", ""),
    ]
    assert [o["outcome"] for o in history.outcomes] == ["decline", "accept"]


def _reservation(decision: str, outbound: bool = True) -> Reservation:
    """The channel allows two sends a day; offer b once an hour; c is held."""
    return Reservation(
        "c8",
        decision,
        "sms" if outbound else "web",
        outbound,
        time.time() + 300,
        ((86400, 2),) if outbound else (),
        (("a", (), False), ("b", ((3600, 1),), False), ("c", (), True)),
    )


def test_reservations_hold_every_cap(backend: Backend) -> None:
    async def work(store: Store) -> Any:
        await store.record_outcome(
            OutcomeRecord("c8", "d0", "c", "accept", 0.0, time.time(), "k"),
            OutcomeEffects(suppress=True),
        )
        singles = [await store.reserve(_reservation(f"d{i}")) for i in range(3)]
        return singles, await store.fetch("c8")

    singles, record = backend.run(work)
    assert singles == [["a", "b"], ["a"], []]
    # Sends count at once; the acceptance (no impression) made no contact.
    assert sorted((c.decision_id, c.offer_id, c.channel) for c in record.contacts) == [
        ("d0", "a", "sms"),
        ("d0", "b", "sms"),
        ("d1", "a", "sms"),
    ]


def test_the_budget_counts_decisions_across_its_channels(backend: Backend) -> None:
    def send(decision: str, channel: str) -> Reservation:
        return Reservation(
            "c12",
            decision,
            channel,
            True,
            time.time() + 300,
            (),
            (("a", (), False), ("b", (), False)),
            ((86400, 2),),
            ("email", "sms"),
        )

    async def work(store: Store) -> Any:
        sends = [await store.reserve(send("d1", "email")), await store.reserve(send("d2", "sms"))]
        return sends, await store.reserve_many([send("d3", "email"), send("d4", "sms")])

    sends, refused = backend.run(work)
    assert sends == [["a", "b"], ["a", "b"]]  # two decisions, four contacts: 2 of 2 used
    assert refused == [[], []]


def test_volume_limits_hold_over_every_customer_and_give_back_what_was_refused(
    backend: Backend,
) -> None:
    # Offer v: at most 2 contacts over the whole base in the period; offer w: unlimited.
    # Sends to five customers: the first two get v, the rest only w. A customer whose own
    # re-check refuses v (held since an acceptance) gives back what its claim took.
    v = (("vol:v|86400|1", 2, 90000),)

    def send(customer: str, decision: str, channel_volume: tuple[Any, ...] = ()) -> Reservation:
        return Reservation(
            customer,
            decision,
            "email",
            True,
            time.time() + 300,
            (),
            (("v", (), True), ("w", (), False)),
            channel_volume=channel_volume,
            offer_volume=(("v", v),),
        )

    async def work(store: Store) -> Any:
        await store.record_outcome(
            OutcomeRecord("h1", "d0", "v", "accept", 0.0, time.time(), "k"),
            OutcomeEffects(suppress=True),
        )
        held = await store.reserve(send("h1", "dh"))  # refused by its own hold: given back
        singles = [await store.reserve(send(f"u{i}", f"d{i}")) for i in range(3)]
        many = await store.reserve_many([send("u3", "d3"), send("u4", "d4")])
        used = await store.volume_usage(["vol:v|86400|1", "vol:never|1|1"])
        # A channel limit of one decision: the second decision on it makes no contact.
        channel = (("vol:chan|3600|1", 1, 7200),)
        first = await store.reserve(send("u5", "d5", channel))
        second = await store.reserve_many([send("u6", "d6", channel)])
        return held, singles, many, used, first, second

    held, singles, many, used, first, second = backend.run(work)
    assert held == ["w"]
    assert singles == [["v", "w"], ["v", "w"], ["w"]]
    assert many == [["w"], ["w"]]
    assert used == [2, 0]
    assert first == ["w"] and second == [[]]


def test_inbound_reservations_wait_for_their_impression(backend: Backend) -> None:
    async def work(store: Store) -> Any:
        first = await store.reserve_many([_reservation("d1", outbound=False)])
        reserved = await store.fetch("c8")
        # A refresh: the same offers shown again take no new place and extend the hold.
        later = replace(_reservation("d2", outbound=False), pending_until=time.time() + 600)
        again = await store.reserve(later)
        refreshed = await store.fetch("c8")
        for decision, key in (("d2", "k1"), ("d1", "k2")):  # both showings of b reported
            await store.record_outcome(
                OutcomeRecord("c8", decision, "b", "impression", 0.0, time.time(), key),
                OutcomeEffects(impression=True),
            )
        third = await store.reserve(_reservation("d3", outbound=False))
        return first, reserved, again, refreshed, third, await store.fetch("c8")

    first, reserved, again, refreshed, third, seen = backend.run(work)
    assert first == [["a", "b", "c"]]
    assert sorted((c.decision_id, c.offer_id) for c in reserved.pending) == [
        ("d1", "a"),
        ("d1", "b"),
        ("d1", "c"),
    ]
    assert reserved.contacts == ()
    assert again == ["a", "b", "c"]
    assert sorted((c.decision_id, c.offer_id) for c in refreshed.pending) == [
        ("d1", "a"),
        ("d1", "b"),
        ("d1", "c"),
    ]
    assert all(c.at > time.time() + 500 for c in refreshed.pending)  # lapses later now
    # One showing, one contact, whichever of its decisions reported it (and both did).
    assert [(c.decision_id, c.offer_id, c.channel) for c in seen.contacts] == [("d1", "b", "web")]
    # b's hourly cap is now taken by that contact; a and c are still shown, still held once.
    assert third == ["a", "c"]
    assert sorted((c.decision_id, c.offer_id) for c in seen.pending) == [("d1", "a"), ("d1", "c")]


def test_decisions_are_logged_in_order_and_kept_per_customer(backend: Backend) -> None:
    logged = [
        LoggedDecision(
            "c9",
            {"decision_id": f"d{i}", "features": {"x": 1.5}, "candidates": [["a", 0.1, 0.2]]},
            {"decision_id": f"d{i}", "ts": float(i), "actions": [["a", 1]]},
        )
        for i in range(3)
    ]

    async def work(store: Store) -> Any:
        await store.append_decisions(logged[:2])
        # A batch written again (its reply lost to a Redis restart; a log process restarted
        # before it acknowledged): each decision is still logged once.
        await store.append_decisions(logged[1:])
        await store.append_decisions(logged[:2])
        return await store.read_decisions(), await store.history("c9")

    entries, history = backend.run(work)
    assert [e["decision_id"] for e in entries] == ["d0", "d1", "d2"]
    assert entries[0]["candidates"] == [["a", 0.1, 0.2]]  # JSON, as training reads it
    assert [d["decision_id"] for d in history.decisions] == ["d2", "d1", "d0"]


def test_many_at_once_answer_as_one_at_a_time(backend: Backend) -> None:
    backend.put_profile("c10", {"tenure_months": 3}, {})

    async def work(store: Store) -> Any:
        now = time.time()
        many = await store.fetch_many(["c10", "c11"], now)
        singles = [await store.fetch("c10", now), await store.fetch("c11", now)]
        reserved = await store.reserve_many([_reservation("d1"), _reservation("d2")])
        return many, singles, reserved

    many, singles, reserved = backend.run(work)
    assert [(r.customer_id, r.known, r.batch.tolist()) for r in many] == [
        (r.customer_id, r.known, r.batch.tolist()) for r in singles
    ]
    assert reserved == [["a", "b", "c"], ["a", "c"]]


def test_duplicates_arriving_at_the_same_moment_are_recorded_once(backend: Backend) -> None:
    now = time.time()
    reports = [
        OutcomeRecord("c12", f"d{k}", "a", "click", 0.0, now, f"key-{k}")
        for k in range(40)
        for _ in range(2)
    ]

    async def work(store: Store) -> Any:
        results = await asyncio.gather(
            *(store.record_outcome(r, OutcomeEffects(impression=True)) for r in reports)
        )
        return results, await store.read_outcomes()

    results, logged = backend.run(work)
    assert sorted(o["idempotency_key"] for o in logged) == sorted(f"key-{k}" for k in range(40))
    for k in range(40):
        first, second = results[2 * k], results[2 * k + 1]
        assert sorted([first[0], second[0]]) == [False, True]  # the other learns it was a copy


def test_stored_data_of_any_shape_reads_without_error(backend: Backend) -> None:
    fields = dict(profile_fields(backend.schema, {}, {}, time.time()))
    backend.put_fields("c13", {**fields, keys.FIELD_ATTRIBUTES: b'{"first_name": 5, "x": "y"}'})
    backend.put_fields("c14", {**fields, keys.FIELD_ATTRIBUTES: b"not json"})
    backend.put_fields("c15", {**fields, keys.FIELD_VECTOR: b"\x00\x01\x02"})

    async def work(store: Store) -> Any:
        odd, corrupt = await store.fetch("c13"), await store.fetch("c14")
        with pytest.raises(ProfileSchemaMismatch, match="reload profiles"):
            await store.fetch("c15")
        return odd, corrupt

    odd, corrupt = backend.run(work)
    assert odd.attributes == {"first_name": "5", "x": "y"}
    assert corrupt.known and corrupt.attributes == {}


def test_a_customer_over_its_event_rate_is_refused_and_unchanged(backend: Backend) -> None:
    async def work(store: Store) -> Any:
        # Start just after a second begins: the 25 then fall in one second (a run that
        # straddled two could let all of them in, 12 + 13, on a busy machine).
        await asyncio.sleep(1.01 - time.time() % 1)
        results = await asyncio.gather(
            *(
                store.record_event(EventRecord("c16", "web", "page_view", {}, time.time()))
                for _ in range(25)
            ),
            return_exceptions=True,
        )
        await store.record_event(EventRecord("c17", "web", "page_view", {}, 1.0))  # not c16's
        return results, await store.fetch("c16"), await store.fetch("c17")

    results, record, other = backend.run(work)
    refused = [r for r in results if isinstance(r, RateLimited)]
    # 20 a second (a run slower than the rest of its second still lets a few more in)
    assert 0 < len(refused) <= 5 and other.realtime["n:page_view"] == "1"
    assert int(record.realtime["n:page_view"]) == 25 - len(refused)


def test_names_outside_the_vocabulary_count_as_other(backend: Backend) -> None:
    async def work(store: Store) -> Any:
        for n in range(12):
            event = EventRecord(
                "c18", "web", f"made_up_{n}", {"category": f"nonsense-{n}"}, 1000.0 + n
            )
            await store.record_event(event)
        return await store.fetch("c18", 1100.0), await store.history("c18")

    record, history = backend.run(work)
    assert record.realtime["n:other"] == "12"
    assert record.windows["k:other"] == (12.0, 12.0, 12.0)
    assert not [name for name in record.realtime if "made_up" in name or "nonsense" in name]
    assert not [name for name in record.windows if "made_up" in name or "nonsense" in name]
    assert history.events[0]["event_type"] == "made_up_11"  # the view keeps what was sent


def test_forgetting_removes_the_customer_and_its_log_entries(backend: Backend) -> None:
    backend.put_profile("c19", {"tenure_months": 3}, {"first_name": "Ann"})
    backend.put_profile("c20", {}, {})
    now = time.time()

    async def work(store: Store) -> Any:
        for cid in ("c19", "c20"):
            await store.record_event(
                EventRecord(cid, "web", "opt_out", {"channel": "sms"}, now, idempotency_key="e1")
            )
            await store.record_outcome(
                OutcomeRecord(cid, "d", "a", "accept", 0.0, now, f"k-{cid}"),
                OutcomeEffects(suppress=True, impression=True),
            )
            await store.append_decisions(
                [LoggedDecision(cid, {"decision_id": f"d-{cid}", "customer_id": cid}, {})]
            )
        first = await store.forget("c19")
        again = await store.forget("c19")
        return (
            first,
            again,
            await store.fetch("c19"),
            await store.history("c19"),
            (
                await store.read_decisions(),
                await store.read_outcomes(),
                await store.fetch("c20"),
            ),
        )

    first, again, record, history, (decisions, outcomes, other) = backend.run(work)
    assert {"profile", "rt", "policy", "consent", "events", "decisions", "outcomes"} <= set(
        first.removed
    )
    assert first.idempotency_keys == 2  # the outcome's and the event's
    assert (first.decision_log_entries, first.outcome_log_entries) == (1, 1)
    assert again == Forgotten()  # idempotent: nothing left to remove
    assert not record.known and record.realtime == {} and record.last_category == ""
    assert record.cooldowns == {} and record.held == {}
    assert record.consent == {} and history.events == [] and history.outcomes == []
    assert [d["customer_id"] for d in decisions] == ["c20"]
    assert [o["customer_id"] for o in outcomes] == ["c20"]
    assert other.known and other.consent  # the other customer is untouched
