"""Right message, right time, across channels: contact policy and real-time state, through
the real gRPC API, two server replicas and one real Redis."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
import redis

from arbiter.v1 import common_pb2, decision_pb2
from tests import conftest
from tests.conftest import ServerThread

WEB, APP, CALL, EMAIL = (
    common_pb2.CHANNEL_WEB,
    common_pb2.CHANNEL_MOBILE_APP,
    common_pb2.CHANNEL_CALL_CENTER,
    common_pb2.CHANNEL_EMAIL,
)
CUSTOMER = "cust-000042"  # no fibre at home: fibre_broadband is eligible everywhere


def decide(
    server: ServerThread,
    channel: common_pb2.Channel.ValueType,
    offer: str | None = None,
    **fields: object,
) -> decision_pb2.DecideResponse:
    offers = [offer] if offer else []
    request = decision_pb2.DecideRequest(
        customer_id=CUSTOMER,
        channel=channel,
        limit=3,
        offer_ids=offers,
        explain=True,
        **fields,  # type: ignore[arg-type]
    )
    return server.decisions.Decide(request, timeout=5)


def report(
    server: ServerThread,
    decision: decision_pb2.DecideResponse,
    outcome: common_pb2.Outcome.ValueType,
) -> None:
    conftest.report(server, decision, CUSTOMER, outcome)


def test_a_web_decline_keeps_the_offer_out_of_every_channel(server: ServerThread) -> None:
    shown = decide(server, WEB, "fibre_broadband")
    assert [a.offer_id for a in shown.actions] == ["fibre_broadband"]

    report(server, shown, common_pb2.OUTCOME_DECLINE)

    for channel in (WEB, APP, CALL, EMAIL):
        again = decide(server, channel, "fibre_broadband")
        assert not again.actions, channel
        # (by night the email call also says quiet hours, for the whole channel)
        (excluded,) = [e for e in again.excluded if e.offer_id == "fibre_broadband"]
        assert excluded.reason.startswith("declined: cool-down for 30 more days")
    other = decide(server, CALL)
    assert other.actions and "fibre_broadband" not in {a.offer_id for a in other.actions}


def test_an_accepted_offer_is_not_made_again(server: ServerThread) -> None:
    shown = decide(server, CALL, "device_upgrade_5g")
    report(server, shown, common_pb2.OUTCOME_ACCEPT)
    again = decide(server, WEB, "device_upgrade_5g")
    assert not again.actions
    assert [(e.offer_id, e.reason) for e in again.excluded] == [
        ("device_upgrade_5g", "already accepted")
    ]


def test_email_is_a_send_and_counts_at_decision_time(server: ServerThread) -> None:
    sent = [decide(server, EMAIL) for _ in range(4)]
    assert [bool(s.actions) for s in sent] == [True, True, False, False]  # 2 per 7 days
    assert [(e.offer_id, e.reason) for e in sent[2].excluded] == [
        ("*", "email cap reached: 2 of 2 per 7 days")
    ]


def _on_screen(answer: decision_pb2.DecideResponse) -> list[tuple[str, str, str]]:
    return [(a.offer_id, a.message.treatment_id, a.message.headline) for a in answer.actions]


def test_a_refreshing_page_keeps_its_offers_and_starves_no_channel(
    server: ServerThread, loaded: redis.Redis
) -> None:
    pages = [decide(server, WEB, placement="home_hero") for _ in range(20)]  # no reports
    first = _on_screen(pages[0])
    assert len(first) == 3
    assert [_on_screen(p) for p in pages] == [first] * 20
    assert loaded.zcard(f"arb:{{{CUSTOMER}}}:pending") == 3  # one place per offer, not 60
    reasons = [r.text for r in pages[-1].actions[0].reasons]
    assert any(r.startswith("shown again: an earlier decision's impression") for r in reasons)

    # The call center right after is not starved; the offers on screen come first.
    call = decide(server, CALL)
    assert len(call.actions) == 3
    assert call.actions[0].offer_id in {offer for offer, _, _ in first}
    # An outcome changes what is shown: a decline ends that offer's showing everywhere.
    report(server, pages[-1], common_pb2.OUTCOME_DECLINE)  # the first action declined
    after = decide(server, WEB, placement="home_hero")
    assert len(after.actions) == 3
    assert first[0][0] not in {a.offer_id for a in after.actions}
    assert {a.offer_id for a in after.actions[:2]} == {offer for offer, _, _ in first[1:]}


def test_caps_hold_under_concurrent_decisions_on_two_replicas(
    server_factory: Callable[..., ServerThread],
    redis_or_cluster: tuple[str, redis.Redis | redis.RedisCluster],
) -> None:
    redis_url, loaded = redis_or_cluster
    # Generous budgets: this is about the atomic reservation, not about timeouts (a
    # degraded answer whose reservation times out is flagged, see test_degraded).
    budgets = {"feature_timeout_ms": 2000, "reserve_timeout_ms": 2000}
    replicas = [server_factory(redis_url, **budgets), server_factory(redis_url, **budgets)]

    def at_once(
        channels: tuple[common_pb2.Channel.ValueType, ...], offer: str | None
    ) -> list[decision_pb2.DecideResponse]:
        start = threading.Barrier(24)
        answers: list[decision_pb2.DecideResponse] = []
        lock = threading.Lock()

        def call(i: int) -> None:
            start.wait()
            response = decide(replicas[i % 2], channels[i % len(channels)], offer)
            with lock:
                answers.append(response)

        threads = [threading.Thread(target=call, args=(i,)) for i in range(24)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return answers

    # 24 inbound decisions at once: one showing of the offer, one place under its cap.
    shown = at_once((WEB, APP, CALL), "fibre_broadband")
    assert [a.offer_id for s in shown for a in s.actions] == ["fibre_broadband"] * 24
    assert loaded.zcard(f"arb:{{{CUSTOMER}}}:pending") == 1
    for answer in shown:  # every one reported: still one contact
        report(replicas[0], answer, common_pb2.OUTCOME_IMPRESSION)
    assert loaded.zcard(f"arb:{{{CUSTOMER}}}:contacts") == 1
    assert loaded.zcard(f"arb:{{{CUSTOMER}}}:pending") == 0
    # 24 sends at once: exactly the 2 a week the email cap allows.
    sent = at_once((EMAIL,), None)
    assert sum(1 for s in sent if s.actions) == 2


def test_read_your_writes_across_replicas_and_channels(
    server_factory: Callable[..., ServerThread],
    redis_or_cluster: tuple[str, redis.Redis | redis.RedisCluster],
) -> None:
    redis_url, _ = redis_or_cluster
    server, other = server_factory(redis_url), server_factory(redis_url)
    for _ in range(2):
        conftest.record_event(server, CUSTOMER, "product_view", {"category": "fibre"})
    response = decide(other, CALL, "fibre_broadband")
    assert response.lifecycle_stage == common_pb2.LIFECYCLE_STAGE_EVALUATION
    reasons = [r.text for r in response.actions[0].reasons]
    assert any("viewed fibre pages 2 times today" in r for r in reasons), reasons


@pytest.fixture
def quick_catalog(tmp_path: Path) -> Path:
    return conftest.catalog_variant(
        tmp_path / "catalog.toml",
        {"pending_impression_minutes = 5": "pending_impression_minutes = 0.05"},
    )


def test_unreported_impressions_lapse_and_reported_ones_count(
    server_factory: Callable[..., ServerThread],
    loaded: redis.Redis,
    redis_url: str,
    quick_catalog: Path,
) -> None:
    server = server_factory(redis_url, catalog_path=quick_catalog)
    first = decide(server, WEB, "fibre_broadband")
    report(server, first, common_pb2.OUTCOME_IMPRESSION)  # 1 of 3 made
    second = decide(server, WEB, "fibre_broadband")  # a new showing: 2 of 3 taken
    third = decide(server, WEB, "fibre_broadband")  # a refresh: the same showing
    assert second.actions and third.actions
    report(server, third, common_pb2.OUTCOME_IMPRESSION)
    report(server, second, common_pb2.OUTCOME_IMPRESSION)  # the same showing, counted once
    fourth = decide(server, WEB, "fibre_broadband")  # 3 of 3 taken, never reported
    assert fourth.actions
    assert decide(server, WEB, "fibre_broadband").actions  # a refresh of the fourth

    time.sleep(3.5)  # the fourth's place lapses; the reported ones stay
    fifth = decide(server, WEB, "fibre_broadband")
    assert fifth.actions
    report(server, fifth, common_pb2.OUTCOME_IMPRESSION)
    capped = decide(server, WEB, "fibre_broadband")
    assert not capped.actions
    assert capped.excluded[0].reason == "cap reached: 3 of 3 per 7 days"
    contacts = loaded.zrange(f"arb:{{{CUSTOMER}}}:contacts", 0, -1)
    assert sorted(contacts) == sorted(
        f"{d.decision_id}|fibre_broadband|web".encode() for d in (first, second, fifth)
    )


def test_policy_errors_do_not_leak(server: ServerThread) -> None:
    with pytest.raises(grpc.RpcError) as error:
        server.decisions.ReportOutcome(
            decision_pb2.ReportOutcomeRequest(
                decision_id="d",
                customer_id=CUSTOMER,
                offer_id="ghost",
                outcome=common_pb2.OUTCOME_DECLINE,
            ),
            timeout=5,
        )
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
