"""Always-on outbound: a run goes over the customer base once a day and sends each
customer of its segment its message at the run's time in their own zone, exactly once,
whatever crashes; a customer who left the segment since is not sent it
(engine/core/triggers.Run, engine/service/outbound_runs.py, feature_store/outbound_runs.py)."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from common.errors import ConfigurationError
from engine.core.catalog import parse_catalog
from engine.ops import outbound
from engine.service.outbound_runs import OutboundRuns
from engine.service.trigger_scheduler import LEFT_SEGMENT, TriggerScheduler
from feature_store import keys
from feature_store.outbound_runs import PASS_FIELDS, Cursor, RunStore
from feature_store.redis_client import AsyncClient
from feature_store.redis_store import RedisFeatureStore
from tests.conftest import ServerThread
from tests.engine.test_triggers import PATIENT, event, stream, with_triggers
from training.world import World

RUN = """
[[outbound]]
id = "renewal_morning"
segment = "email_opt_in == 1 and contract_months_left <= 3"
channels = ["email"]
at = "10:00"
"""
TOKYO_TEN = datetime(2026, 12, 7, 1, 0, tzinfo=UTC).timestamp()  # 10:00 in Tokyo
NEW_YORK_TEN = datetime(2026, 12, 7, 15, 0, tzinfo=UTC).timestamp()  # 10:00 in New York
MORNING = datetime(2026, 12, 7, 0, 30, tzinfo=UTC).timestamp()  # the day's pass
# A dead pass's lease: long enough that a busy machine does not see it lapse before the
# test looks, short enough to wait out
LEASE = 3.0


def in_segment(world: World) -> set[str]:
    """The run's segment, from the truth the profiles were loaded from."""
    f = world.features
    chosen = np.flatnonzero((f["email_opt_in"] == 1) & (f["contract_months_left"] <= 3))
    return {world.customer_id(int(i)) for i in chosen}


def serving_run(
    server_factory: Callable[..., ServerThread], redis_url: str, tmp_path: Path
) -> ServerThread:
    """A server whose customers are in Tokyo unless their profile says, with RUN in its
    catalog; nothing runs in the background: the test holds the clock."""
    catalog = with_triggers(tmp_path / "catalog.toml", "Asia/Tokyo")
    catalog.write_text(catalog.read_text() + RUN)
    return server_factory(
        redis_url,
        catalog_path=catalog,
        trigger_poll_seconds=0,
        outbound_run_seconds=0,
        **PATIENT,
    )


def server_client(server: ServerThread) -> AsyncClient:
    """The server's own (asynchronous) Redis client."""
    store = server.application.store
    assert isinstance(store, RedisFeatureStore)
    return store.client


def run_store(server: ServerThread) -> RunStore:
    return RunStore(server_client(server))


def parts(
    server: ServerThread, clock: list[float], **options: Any
) -> tuple[OutboundRuns, TriggerScheduler]:
    queue = server.application.triggers
    assert queue is not None
    runs = run_store(server)
    passes = OutboundRuns(server.application, queue, runs, clock=lambda: clock[0], **options)
    scheduler = TriggerScheduler(server.application, queue, clock=lambda: clock[0], runs=runs)
    return passes, scheduler


def fire_due(server: ServerThread, scheduler: TriggerScheduler) -> int:
    fired = 0
    while n := server.run(scheduler.tick(poll=0)):
        fired += n
    return fired


def waiting(client: redis.Redis | redis.RedisCluster, run_id: str) -> set[str]:
    out = set()
    for bucket in range(keys.TRIGGER_BUCKETS):
        members: Any = client.hkeys(keys.trigger_keys(bucket)[1])
        for member in members:
            customer, trigger = member.decode().split("|", 1)
            if trigger == run_id:
                out.add(customer)
    return out


def move_to(client: redis.Redis, customer: str, zone: str) -> None:
    """The customer's profile says they live in ``zone``."""
    key = keys.customer_key(customer, keys.PROFILE)
    attributes = json.loads(client.hget(key, keys.FIELD_ATTRIBUTES) or b"{}")
    client.hset(key, keys.FIELD_ATTRIBUTES, json.dumps({**attributes, "timezone": zone}))


def test_a_run_sends_its_segment_once_at_its_time_in_each_customers_zone(
    server_factory: Callable[..., ServerThread],
    loaded: redis.Redis,
    redis_url: str,
    world: World,
    tmp_path: Path,
) -> None:
    segment = in_segment(world)
    assert 50 < len(segment) < world.size // 2
    new_yorkers = sorted(segment)[:3]
    for customer in new_yorkers:
        move_to(loaded, customer, "America/New_York")
    server = serving_run(server_factory, redis_url, tmp_path)
    clock = [MORNING]
    passes, scheduler = parts(server, clock, page=300)

    assert server.run(passes.check()) == ["renewal_morning"]
    state = server.run(run_store(server).state("renewal_morning", "2026-12-07"))
    assert int(state["scanned"]) >= world.size  # SCAN may return one twice, never misses
    assert int(state["scheduled"]) == len(segment)
    assert waiting(loaded, "renewal_morning") == segment
    assert server.run(passes.check()) == []  # today's pass is made

    clock[0] = TOKYO_TEN - 1
    assert fire_due(server, scheduler) == 0  # not before ten
    clock[0] = TOKYO_TEN
    assert fire_due(server, scheduler) == len(segment) - 3  # ten in Tokyo
    clock[0] = NEW_YORK_TEN
    assert fire_due(server, scheduler) == 3  # ten in New York

    messages = [m for m in stream(loaded) if m["trigger_id"] == "renewal_morning"]
    sent = Counter(m["customer_id"] for m in messages)
    assert max(sent.values()) == 1 and set(sent) <= segment  # none twice, none outside
    assert len(sent) >= len(segment) // 2  # these customers take email
    state = server.run(run_store(server).state("renewal_morning", "2026-12-07"))
    suppressed = sum(int(v) for k, v in state.items() if k.startswith("suppressed:"))
    assert int(state["sent"]) == len(sent) and int(state["sent"]) + suppressed == len(segment)
    assert not waiting(loaded, "renewal_morning")
    shown = outbound.pass_line(state)  # as `arbiter outbound runs` prints it
    assert f"went over {state['scanned']} customers" in shown
    assert f"{len(segment)} scheduled" in shown and f"sent {len(sent)}" in shown
    made_again = {k: v for k, v in state.items() if k not in PASS_FIELDS}  # a rerun's
    assert outbound.pass_line(made_again).startswith("to be made again, not begun: 0 scheduled")

    # a replica whose clock is behind (not yet ten in Tokyo, the evening before in New
    # York) goes over the base again: today's ten is to come by its clock, but nobody is
    # sent it twice
    server.run(run_store(server).again("renewal_morning", "2026-12-07"))
    clock[0] = TOKYO_TEN - 5
    assert server.run(passes.check()) == ["renewal_morning"]
    # one the policy suppressed may be tried again; nobody who was sent it
    assert waiting(loaded, "renewal_morning") == segment - set(sent)
    state = server.run(run_store(server).state("renewal_morning", "2026-12-07"))
    assert int(state["not_reeligible"]) == len(sent)
    # the next day: each once more, at ten
    clock[0] = MORNING + 86400
    assert server.run(passes.check()) == ["renewal_morning"]
    assert waiting(loaded, "renewal_morning") == segment
    clock[0] = TOKYO_TEN + 86400
    assert fire_due(server, scheduler) >= len(segment) - 3


def test_a_pass_cut_off_goes_on_from_where_it_was_and_schedules_nobody_twice(
    server_factory: Callable[..., ServerThread],
    redis_or_cluster: tuple[str, redis.Redis | redis.RedisCluster],
    world: World,
    tmp_path: Path,
) -> None:
    """A process dies after three pages (its lease not given back); another takes over
    once the lease lapses and goes on from the last page written. On a cluster too (a
    cursor per primary)."""
    redis_url, client = redis_or_cluster
    server = serving_run(server_factory, redis_url, tmp_path)
    clock = [MORNING]

    class Killed(Exception):
        pass

    class Dying(RunStore):
        pages = 0

        async def customers(self, cursor: Cursor | None, count: int) -> tuple[list[str], Cursor]:
            self.pages += 1
            if self.pages > 3:
                raise Killed
            return await super().customers(cursor, count)

        async def release(self, run_id: str, owner: str) -> None:
            pass  # a killed process gives nothing back

    queue = server.application.triggers
    assert queue is not None
    dying = OutboundRuns(
        server.application,
        queue,
        Dying(server_client(server)),
        clock=lambda: clock[0],
        page=200,
        lease_seconds=LEASE,
    )
    with pytest.raises(Killed):
        server.run(dying.go_over(server.application.core.catalog.triggers.runs[0]))
    cut = server.run(run_store(server).state("renewal_morning", "2026-12-07"))
    assert "finished" not in cut and 0 < int(cut["scanned"]) < world.size

    taker, _ = parts(server, clock, page=200)
    assert server.run(taker.check()) == []  # the dead one's lease still holds
    time.sleep(LEASE + 0.1)
    assert server.run(taker.check()) == ["renewal_morning"]
    done = server.run(run_store(server).state("renewal_morning", "2026-12-07"))
    # the taker went on from the last page written: the base once, give or take SCAN's
    # repeats, not the dead one's pages again from the start
    assert world.size <= int(done["scanned"]) < world.size + int(cut["scanned"])
    assert waiting(client, "renewal_morning") == in_segment(world)
    assert int(done["scheduled"]) == len(in_segment(world))  # each once


def test_a_customer_who_left_the_segment_is_not_sent_the_run(
    server_factory: Callable[..., ServerThread],
    loaded: redis.Redis,
    redis_url: str,
    world: World,
    tmp_path: Path,
) -> None:
    server = serving_run(server_factory, redis_url, tmp_path)
    clock = [MORNING]
    passes, scheduler = parts(server, clock)
    server.run(passes.check())
    leaver = sorted(in_segment(world))[0]
    event(server, leaver, "opt_out", channel="email")  # email_opt_in is 0 from now on
    clock[0] = TOKYO_TEN
    fire_due(server, scheduler)
    sent = {m["customer_id"] for m in stream(loaded)}
    assert leaver not in sent and sent
    state = server.run(run_store(server).state("renewal_morning", "2026-12-07"))
    assert state[f"suppressed:{LEFT_SEGMENT}"] == "1"


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ('at = "25:00"', "outbound renewal_morning.at: a local time of day as HH:MM"),
        ('days = ["mon", "someday"]', "outbound renewal_morning.days: unknown ['someday']"),
        ('channels = ["pigeon"]', "outbound renewal_morning.channels: unknown ['pigeon']"),
        ('offers = ["no_such"]', "outbound renewal_morning.offers: no offer no_such"),
        ('segment = "tenure_months >"', "outbound renewal_morning"),
        ('id = "basket_reminder"', "duplicate trigger or outbound ids"),
    ],
)
def test_a_bad_run_is_refused_naming_it(
    daytime_catalog: Path, definitions: Any, change: str, error: str
) -> None:
    key = change.split(" =", 1)[0]
    table = "\n".join(line for line in RUN.splitlines() if not line.startswith(f"{key} ="))
    text = daytime_catalog.read_text() + table + f"\n{change}\n"
    with pytest.raises(ConfigurationError) as refused:
        parse_catalog(text, frozenset(definitions.schema.names))
    assert error in str(refused.value)
