"""Contact rules customers notice, through the real server on Redis: a marketing budget
across channels (atomic over two replicas) and quiet hours in the customer's time zone."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from arbiter.v1 import common_pb2, decision_pb2, profile_pb2
from engine.settings import Definitions
from feature_store.loader import load_profiles
from tests.conftest import ServerThread, catalog_variant, record_event, report, zone_at
from training.world import World

EMAIL, SMS, WEB = common_pb2.CHANNEL_EMAIL, common_pb2.CHANNEL_SMS, common_pb2.CHANNEL_WEB
CUSTOMER = "cust-000042"


def _decide(
    server: ServerThread, channel: common_pb2.Channel.ValueType, customer: str = CUSTOMER
) -> decision_pb2.DecideResponse:
    request = decision_pb2.DecideRequest(
        customer_id=customer, channel=channel, limit=2, explain=True
    )
    return server.decisions.Decide(request, timeout=5)


def _opt_in(server: ServerThread, customer: str = CUSTOMER) -> None:
    record_event(server, customer, "opt_in", {"channel": "all"})


@pytest.fixture
def budget_of_two(tmp_path: Path) -> Path:
    """Email 2 a week and SMS 1 a day would allow 3 sends; the budget allows 2, daytime."""
    return catalog_variant(
        tmp_path / "catalog.toml",
        {
            "days = 7\nmax = 4\n": "days = 7\nmax = 2\n",
            'default_timezone = "Europe/London"': f'default_timezone = "{zone_at(12)}"',
        },
    )


def test_the_marketing_budget_counts_every_channel_it_names_together(
    server_factory: Callable[..., ServerThread],
    loaded: redis.Redis,
    redis_url: str,
    budget_of_two: Path,
) -> None:
    server = server_factory(redis_url, catalog_path=budget_of_two)
    _opt_in(server)
    assert _decide(server, EMAIL).actions
    assert _decide(server, SMS).actions
    refused = _decide(server, EMAIL)  # the email cap alone would allow a second one
    assert not refused.actions
    assert [(e.offer_id, e.reason) for e in refused.excluded] == [
        ("*", "marketing budget reached: 2 of 2 per 7 days (email, sms)")
    ]
    assert _decide(server, WEB).actions  # the web is not in this budget
    profile = server.profiles.GetProfile(
        profile_pb2.GetProfileRequest(customer_id=CUSTOMER), timeout=5
    )
    (budget,) = [c for c in profile.channel_caps if c.budget]
    assert (budget.channel, budget.used, budget.max, budget.window) == (
        "email, sms",
        2,
        2,
        "2 per 7 days",
    )


def test_the_budget_holds_under_concurrent_sends_on_two_replicas(
    server_factory: Callable[..., ServerThread],
    loaded: redis.Redis,
    redis_url: str,
    budget_of_two: Path,
) -> None:
    budgets = {"feature_timeout_ms": 2000, "reserve_timeout_ms": 2000}
    replicas = [server_factory(redis_url, catalog_path=budget_of_two, **budgets) for _ in "ab"]
    _opt_in(replicas[0])
    start = threading.Barrier(24)
    sent: list[bool] = []
    lock = threading.Lock()

    def call(i: int) -> None:
        start.wait()
        answer = _decide(replicas[i % 2], (EMAIL, SMS)[i // 2 % 2])
        with lock:
            sent.append(len(answer.actions) > 0)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(sent) == 2
    contacts: list[bytes] = loaded.zrange(f"arb:{{{CUSTOMER}}}:contacts", 0, -1)  # type: ignore[assignment]
    assert len({c.split(b"|")[0] for c in contacts}) == 2  # two decisions made contacts


def test_quiet_hours_follow_the_customers_time_zone(
    server_factory: Callable[..., ServerThread],
    loaded: redis.Redis,
    redis_url: str,
    tmp_path: Path,
    world: World,
    definitions: Definitions,
) -> None:
    night = zone_at(23)
    catalog = catalog_variant(
        tmp_path / "catalog.toml",
        {'default_timezone = "Europe/London"': f'default_timezone = "{night}"'},
    )
    server = server_factory(redis_url, catalog_path=catalog)
    # Three customers like cust-000042: on the default zone, in a zone where it is midday,
    # and with a zone nobody knows (the default applies).
    _, features, attributes = next(p for p in world.profiles() if p[0] == CUSTOMER)
    rows = [
        ("tz-default", features, attributes),
        ("tz-midday", features, {**attributes, "timezone": zone_at(12)}),
        ("tz-unknown", features, {**attributes, "timezone": "Mars/Olympus_Mons"}),
    ]
    load_profiles(loaded, definitions.schema, rows)
    for customer, _, _ in rows:
        _opt_in(server, customer)

    quiet = _decide(server, SMS, "tz-default")
    assert not quiet.actions
    (excluded,) = quiet.excluded
    assert excluded.offer_id == "*"
    # 23:xx there (00:00 if the hour turned since the zone was picked)
    assert re.fullmatch(
        rf"quiet hours: no sms from 21:00 to 08:00 in {re.escape(night)}; it is (23|00):\d\d there",
        excluded.reason,
    ), excluded.reason
    assert not _decide(server, EMAIL, "tz-default").actions
    shown = _decide(server, WEB, "tz-default")  # inbound: no quiet hours
    assert shown.actions
    # A decline on the web: at night the sms call says the cool-down beside the quiet
    # hours, as a call by day would say it alone.
    report(server, shown, "tz-default", common_pb2.OUTCOME_DECLINE)
    reasons = {e.offer_id: e.reason for e in _decide(server, SMS, "tz-default").excluded}
    assert reasons["*"].startswith("quiet hours: no sms")
    assert reasons[shown.actions[0].offer_id].startswith("declined: cool-down for 30 more days")
    assert _decide(server, SMS, "tz-midday").actions
    assert not _decide(server, SMS, "tz-unknown").actions
