"""Event triggers: an event schedules a trigger, the scheduler decides it when due with the
ordinary core and puts its message on the channel's delivery stream, exactly once; an
event cancels it; quiet hours move it to their end in the customer's zone
(engine/core/triggers.py, feature_store/triggers.py, engine/service/trigger_scheduler.py)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import grpc
import pytest
import redis
from prometheus_client import REGISTRY

from arbiter.v1 import common_pb2, profile_pb2
from common.errors import ConfigurationError
from engine.core.catalog import parse_catalog
from engine.core.triggers import Pending
from engine.ops import outbound
from engine.service.trigger_scheduler import TriggerScheduler
from examples import sender
from feature_store import keys
from tests.conftest import ServerThread, catalog_variant, zone_at
from training.world import World

WEB = common_pb2.CHANNEL_WEB
# Budgets no busy test machine misses: the test is of what is fired, not how fast
PATIENT = {"feature_timeout_ms": 2000, "reserve_timeout_ms": 2000}
TRIGGERS = """
[[trigger]]
id = "cart_now"
events = ["add_to_cart"]
when = "context.category in ('phones', 'device')"
channels = ["email"]
offers = ["device_upgrade_5g", "device_insurance"]
reeligible_hours = 24

[[trigger]]
id = "cart_later"
events = ["add_to_cart"]
when = "context.category == 'fibre'"
channels = ["email"]
delay_minutes = 30
cancel_on = ["purchase"]
"""


def with_triggers(path: Path, zone: str) -> Path:
    """The demo catalog, greedy, its customers in ``zone``, with TRIGGERS in place of its
    own."""
    catalog_variant(
        path,
        {
            'default_timezone = "Europe/London"': f'default_timezone = "{zone}"',
            'policy = "thompson"': 'policy = "greedy"',
        },
    )
    demo = path.read_text().split("\n[[trigger]]", 1)[0]  # the demo's own left out
    path.write_text(demo + TRIGGERS)
    return path


def event(server: ServerThread, customer: str, event_type: str, **attributes: str) -> None:
    server.profiles.RecordEvent(
        profile_pb2.RecordEventRequest(
            customer_id=customer, channel=WEB, event_type=event_type, attributes=attributes
        ),
        timeout=5,
    )


def stream(
    client: redis.Redis | redis.RedisCluster, channel: str = "email"
) -> list[dict[str, str]]:
    entries: Any = client.xrange(keys.outbound_stream(channel))
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]


def wait_for(what: Callable[[], bool], seconds: float = 10.0) -> None:
    until = time.monotonic() + seconds
    while not what():
        assert time.monotonic() < until, "not within the time allowed"
        time.sleep(0.02)


@pytest.fixture
def serving(
    server_factory: Callable[..., ServerThread], loaded: redis.Redis, redis_url: str, tmp_path: Path
) -> ServerThread:
    catalog = with_triggers(tmp_path / "catalog.toml", zone_at(12))
    return server_factory(redis_url, catalog_path=catalog, trigger_poll_seconds=0.1)


def test_an_event_sends_its_message_once_on_the_channels_stream(
    serving: ServerThread, loaded: redis.Redis
) -> None:
    customer = "cust-000042"
    event(serving, customer, "opt_in", channel="email")
    event(serving, customer, "add_to_cart", category="phones", sku="x1")
    wait_for(lambda: len(stream(loaded)) == 1)

    (message,) = stream(loaded)
    assert message["customer_id"] == customer and message["trigger_id"] == "cart_now"
    assert message["channel"] == "email" and message["event_type"] == "add_to_cart"
    assert message["offer_id"] in ("device_upgrade_5g", "device_insurance")  # its offers only
    copy = json.loads(message["message"])
    assert copy["headline"] and copy["body"]
    # the decision is logged as any, the trigger and the event in its context
    serving.flush_log()
    (logged,) = [d for d in serving.read_decisions() if d["decision_id"] == message["decision_id"]]
    assert logged["context"]["trigger"] == "cart_now" and logged["context"]["sku"] == "x1"

    # the same event again: fired within its re-eligibility window, nothing more
    event(serving, customer, "add_to_cart", category="phones")
    # a condition not met, and an event no trigger reacts to: nothing either
    event(serving, "cust-000043", "add_to_cart", category="travel")
    event(serving, "cust-000043", "page_view", category="phones")
    time.sleep(0.5)
    assert len(stream(loaded)) == 1
    assert not loaded.hlen(keys.trigger_keys(keys.trigger_bucket(customer))[1])


def test_a_purchase_cancels_the_reminder_waiting_for_it(
    serving: ServerThread, loaded: redis.Redis
) -> None:
    customer = "cust-000044"
    queue = serving.application.triggers
    assert queue is not None
    event(serving, customer, "add_to_cart", category="fibre")
    (waiting,) = serving.run(queue.pending_for(customer, ["cart_now", "cart_later"]))
    assert waiting.trigger_id == "cart_later"
    assert 29 * 60 < waiting.due - time.time() <= 30 * 60  # half an hour after the event
    event(serving, customer, "add_to_cart", category="fibre")  # one waits, not two
    assert len(serving.run(queue.pending_for(customer, ["cart_later"]))) == 1
    profile = serving.profiles.GetProfile(
        profile_pb2.GetProfileRequest(customer_id=customer), timeout=5
    )
    (shown,) = profile.pending_triggers  # what the profile (and the desk) show
    assert (shown.trigger_id, shown.event_type) == ("cart_later", "add_to_cart")
    assert shown.due.ToSeconds() == int(waiting.due)

    event(serving, customer, "purchase", category="fibre")
    assert serving.run(queue.pending_for(customer, ["cart_later"])) == []
    profile = serving.profiles.GetProfile(
        profile_pb2.GetProfileRequest(customer_id=customer), timeout=5
    )
    assert not profile.pending_triggers
    due, _, _ = keys.trigger_keys(keys.trigger_bucket(customer))
    assert loaded.zscore(due, keys.trigger_member(customer, "cart_later")) is None
    # a customer forgotten takes what waits for them along
    event(serving, customer, "add_to_cart", category="fibre")
    serving.profiles.ForgetCustomer(profile_pb2.ForgetCustomerRequest(customer_id=customer))
    assert serving.run(queue.pending_for(customer, ["cart_later"])) == []


def test_each_due_trigger_is_fired_once_across_schedulers_and_crashes(
    server_factory: Callable[..., ServerThread],
    redis_or_cluster: tuple[str, redis.Redis | redis.RedisCluster],
    world: World,
    tmp_path: Path,
) -> None:
    """Two replicas fire 120 due triggers between them; 10 were claimed by a scheduler
    that died before deciding, 5 by one that died after publishing: each is on the stream
    once, and those published before are not decided again. On a cluster too: each script
    stays on one slot."""
    redis_url, loaded = redis_or_cluster
    catalog = with_triggers(tmp_path / "catalog.toml", zone_at(12))
    first = server_factory(redis_url, catalog_path=catalog, trigger_poll_seconds=0, **PATIENT)
    queue = first.application.triggers
    assert queue is not None
    opted_in = world.features["email_opt_in"] == 1  # every one may be sent an email
    customers = [world.customer_id(i) for i in range(world.size) if opted_in[i]][:120]
    now = time.time()
    pending = [
        Pending(f"s{i}", "cart_now", c, "add_to_cart", {"category": "phones"}, now, now - 1)
        for i, c in enumerate(customers)
    ]
    for p in pending:
        assert first.run(queue.schedule(p, 86400)) == "scheduled"
    # a scheduler that claimed some and died: a lease of a second
    dead = {b: first.run(queue.claim(b, now, 1.0, 100))[0] for b in range(keys.TRIGGER_BUCKETS)}
    claimed = [p for ps in dead.values() for p, again in ps if not again]
    assert len(claimed) == 120
    # ... all but 15 given back at once, as if never claimed; 5 published before it died
    for p in claimed[15:]:
        first.run(queue.defer(p, now - 1))
    for p in claimed[10:15]:
        first.run(queue.publish("email", p.schedule_id, {"message_id": p.schedule_id}))

    replicas = [
        server_factory(redis_url, catalog_path=catalog, trigger_poll_seconds=0.05, **PATIENT)
        for _ in range(2)
    ]

    def waiting() -> int:
        return sum(loaded.hlen(keys.trigger_keys(b)[1]) for b in range(keys.TRIGGER_BUCKETS))

    wait_for(lambda: waiting() == 0, seconds=30)
    time.sleep(0.3)  # anything fired twice would be on the stream by now
    for replica in replicas:
        replica.flush_log()
    decisions = [d for d in first.read_decisions() if d["request_id"].startswith("s")]
    sent = [m["message_id"] for m in stream(loaded)]
    ids = {p.schedule_id for p in pending}
    assert len(set(sent)) == len(sent) and set(sent) <= ids  # none twice
    # each decided once (none lost), but the 5 published before: not again; a decision
    # that degraded (the store too slow for it, on a busy machine) is tried again after
    # its lease, so only those may come twice
    whole = [d["request_id"] for d in decisions if not d["degraded"]]
    assert sorted(whole) == sorted(ids - {p.schedule_id for p in claimed[10:15]})
    # every one decided sent, unless the policy chose nothing (counted by reason)
    logged = {d["request_id"]: d for d in decisions if not d["degraded"]}
    unsent = ids - set(sent)
    assert all(logged[i]["actions"] == [] for i in unsent), unsent
    assert len(sent) >= 60  # most of them: these customers take email


def test_a_trigger_in_quiet_hours_is_sent_when_they_end_in_the_customers_zone(
    server_factory: Callable[..., ServerThread],
    loaded: redis.Redis,
    redis_url: str,
    tmp_path: Path,
) -> None:
    tokyo = ZoneInfo("Asia/Tokyo")
    catalog = with_triggers(tmp_path / "catalog.toml", "Asia/Tokyo")
    server = server_factory(redis_url, catalog_path=catalog, trigger_poll_seconds=0)
    customer = "cust-000045"
    event(server, customer, "opt_in", channel="email")
    queue = server.application.triggers
    assert queue is not None
    clock = [datetime(2026, 12, 7, 23, 0, tzinfo=tokyo).timestamp()]
    scheduler = TriggerScheduler(server.application, queue, clock=lambda: clock[0])
    pending = Pending("q1", "cart_now", customer, "add_to_cart", {}, clock[0], clock[0])
    assert server.run(queue.schedule(pending, 86400)) == "scheduled"

    assert server.run(scheduler.fire(pending)) == "deferred"
    (waiting,) = server.run(queue.pending_for(customer, ["cart_now"]))
    assert datetime.fromtimestamp(waiting.due, tokyo) == datetime(2026, 12, 8, 8, 0, tzinfo=tokyo)
    clock[0] = datetime(2026, 12, 8, 7, 59, tzinfo=tokyo).timestamp()
    assert server.run(scheduler.tick()) == 0  # not yet due
    assert stream(loaded) == []
    clock[0] = waiting.due
    assert server.run(scheduler.tick()) == 1
    (message,) = stream(loaded)
    assert message["message_id"] == "q1" and message["customer_id"] == customer


def test_a_trigger_the_policy_forbids_is_ended_with_its_reason(
    serving: ServerThread, loaded: redis.Redis
) -> None:
    def suppressed() -> float:
        labels = {"trigger": "cart_now", "reason": "consent"}
        return REGISTRY.get_sample_value("arbiter_triggers_suppressed_total", labels) or 0.0

    before = suppressed()
    customer = "cust-000046"
    event(serving, customer, "opt_out", channel="email")  # no consent: nothing may be sent
    event(serving, customer, "add_to_cart", category="device")
    bucket = keys.trigger_bucket(customer)
    wait_for(lambda: not loaded.hlen(keys.trigger_keys(bucket)[1]))
    assert stream(loaded) == []
    assert suppressed() == before + 1  # ended, counted by the kind of its reason
    serving.flush_log()  # and its decision logged, with the reason
    (logged,) = [
        d for d in serving.read_decisions() if d["customer_id"] == customer and d["context"]
    ]
    assert logged["context"]["trigger"] == "cart_now"


@pytest.mark.parametrize(
    ("table", "error"),
    [
        ('id = "t"\nevents = ["x"]\nchannels = ["pigeon"]', "trigger t.channels: unknown"),
        ('id = "t"\nevents = ["x"]\nchannels = ["email"]\noffers = ["nope"]', "no offer nope"),
        ('id = "t"\nevents = []\nchannels = ["email"]', "trigger t.events: at least one"),
        ('id = "t"\nevents = ["x"]\nchannels = ["email"]\ndelay = 5', "unknown keys ['delay']"),
        ('id = "t"\nevents = ["x"]\nchannels = ["email"]\nwhen = "nosuch > 1"', "nosuch"),
    ],
)
def test_a_bad_trigger_is_refused_naming_it(
    daytime_catalog: Path, definitions: object, table: str, error: str
) -> None:
    names = frozenset(definitions.schema.names)  # type: ignore[attr-defined]
    text = daytime_catalog.read_text() + f"\n[[trigger]]\n{table}\n"
    with pytest.raises(ConfigurationError, match=error.replace("[", r"\[").replace("]", r"\]")):
        parse_catalog(text, names)


def test_the_example_sender_delivers_acknowledges_and_reports_and_takes_over_the_dead(
    serving: ServerThread, loaded: redis.Redis, world: World
) -> None:
    """docs/outbound.md's sender: each message handed out once to the live sender,
    acknowledged after its report; what a dead sender was handed is taken over."""
    opted_in = world.features["email_opt_in"] == 1
    customers = [world.customer_id(i) for i in range(world.size) if opted_in[i]]
    # one whose id ends in 0 (the example bounces those), and three others
    chosen = [next(c for c in customers if c.endswith("0"))]
    chosen += [c for c in customers if not c.endswith("0")][:3]
    for customer in chosen:
        event(serving, customer, "add_to_cart", category="phones")
    wait_for(lambda: len(stream(loaded)) >= 3)
    time.sleep(0.3)
    messages = stream(loaded)
    name = keys.outbound_stream("email")
    # a sender that took the first message and died before acknowledging it
    loaded.xgroup_create(name, "gateway", id="0")
    dead: Any = loaded.xreadgroup("gateway", "dead", {name: ">"}, count=1)
    assert len(dead[0][1]) == 1
    queue = serving.application.triggers
    assert queue is not None
    ((group, unacknowledged, unread),) = serving.run(queue.readers("email"))
    assert (group, unacknowledged) == ("gateway", 1) and unread in (None, len(messages) - 1)

    target = f"127.0.0.1:{serving.running.port}"
    with grpc.insecure_channel(target) as channel:
        handled = sender.run(loaded, channel, "email", "gateway", "live", once=True, claim_idle=0.0)
    assert handled == len(messages)  # the dead one's too, and no message twice
    assert loaded.xpending(name, "gateway")["pending"] == 0  # every one acknowledged
    assert serving.run(queue.readers("email"))[0][1:] in ((0, None), (0, 0))
    serving.flush_log()
    impressions = {
        o["decision_id"] for o in serving.read_outcomes() if o["outcome"] == "impression"
    }
    delivered = {m["decision_id"] for m in messages if not m["customer_id"].endswith("0")}
    assert impressions == delivered
    bounced = [m for m in messages if m["customer_id"].endswith("0")]
    for m in bounced:  # a bounce is an event on the customer, not an outcome
        profile = serving.profiles.GetProfile(
            profile_pb2.GetProfileRequest(customer_id=m["customer_id"]), timeout=5
        )
        assert any(e.event_type == "message_bounced" for e in profile.recent_events)


def test_a_paused_trigger_waits_on_every_replica_and_goes_on_when_resumed(
    server_factory: Callable[..., ServerThread],
    loaded: redis.Redis,
    redis_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    catalog = with_triggers(tmp_path / "catalog.toml", zone_at(12))
    server = server_factory(redis_url, catalog_path=catalog, trigger_poll_seconds=0)
    customer = "cust-000042"
    event(server, customer, "opt_in", channel="email")
    queue = server.application.triggers
    assert queue is not None
    clock = [time.time()]
    scheduler = TriggerScheduler(server.application, queue, clock=lambda: clock[0])
    outbound.pause(loaded, "trigger:cart_now", paused=True)
    outbound.status(loaded, ["email"])
    assert "paused: trigger cart_now" in capsys.readouterr().out
    pending = Pending("p1", "cart_now", customer, "add_to_cart", {}, clock[0], clock[0])
    assert server.run(queue.schedule(pending, 86400)) == "scheduled"

    assert server.run(scheduler.tick()) == 1  # looked at, and left waiting
    assert stream(loaded) == []
    (waiting,) = server.run(queue.pending_for(customer, ["cart_now"]))
    assert waiting.due > clock[0]
    outbound.pause(loaded, "channel:email", paused=True)  # its only channel paused: waits too
    outbound.pause(loaded, "trigger:cart_now", paused=False)
    clock[0] = waiting.due
    assert server.run(scheduler.tick()) == 1 and stream(loaded) == []
    outbound.pause(loaded, "channel:email", paused=False)
    (waiting,) = server.run(queue.pending_for(customer, ["cart_now"]))
    clock[0] = waiting.due
    assert server.run(scheduler.tick()) == 1
    (message,) = stream(loaded)
    assert message["message_id"] == "p1"


def test_a_burst_of_matching_events_for_one_customer_sends_once(
    serving: ServerThread, loaded: redis.Redis, world: World
) -> None:
    """1,000 matching events at once from 8 callers: one message (one trigger waits per
    customer, and once fired it is not again within its re-eligibility window)."""
    opted_in = world.features["email_opt_in"] == 1
    customer = next(world.customer_id(i) for i in range(40, world.size) if opted_in[i])
    limited = 0
    lock = threading.Lock()

    def burst(n: int) -> None:
        nonlocal limited
        for _ in range(n):
            try:
                event(serving, customer, "add_to_cart", category="phones")
            except grpc.RpcError as exc:  # the per-customer event rate: refused, said so
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                with lock:
                    limited += 1

    threads = [threading.Thread(target=burst, args=(125,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wait_for(lambda: len(stream(loaded)) >= 1)
    time.sleep(0.5)
    assert len(stream(loaded)) == 1, limited
    assert limited < 1000  # most of the burst was recorded and matched
