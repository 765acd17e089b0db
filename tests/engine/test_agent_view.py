"""The agent's whole view through GetProfile: what the contact policy holds (cool-downs
with days left, suppressions, caps in use), consent and where it came from, how the
customer moved between stages, and offers by name."""

from __future__ import annotations

import pytest

from arbiter.v1 import common_pb2, decision_pb2, profile_pb2
from tests.conftest import ServerThread, record_event, report

CUSTOMER = "cust-000001"  # fibre is eligible everywhere; opted in to email and SMS


@pytest.fixture
def server(memory_server: ServerThread) -> ServerThread:
    return memory_server


def decide(
    server: ServerThread, channel: common_pb2.Channel.ValueType, offer: str, stage: str = ""
) -> decision_pb2.DecideResponse:
    request = decision_pb2.DecideRequest(
        customer_id=CUSTOMER,
        channel=channel,
        offer_ids=[offer],
        context={"stage": stage} if stage else {},
    )
    return server.decisions.Decide(request, timeout=5)


def test_the_profile_shows_policy_consent_and_stage_history(server: ServerThread) -> None:
    shown = decide(server, common_pb2.CHANNEL_WEB, "fibre_broadband", "evaluation")
    sent = decide(server, common_pb2.CHANNEL_SMS, "fibre_broadband", "purchase")
    assert sent.actions
    report(server, shown, CUSTOMER, common_pb2.OUTCOME_DECLINE)  # then declined on the web
    record_event(
        server, CUSTOMER, "opt_out", {"channel": "email"}, channel=common_pb2.CHANNEL_MOBILE_APP
    )
    server.flush_log()

    profile = server.profiles.GetProfile(profile_pb2.GetProfileRequest(customer_id=CUSTOMER))

    states = {s.offer_id: s for s in profile.contact_state}
    fibre = states["fibre_broadband"]
    assert fibre.offer_name == "Fibre broadband 900"
    assert 29 < fibre.cooldown_days_left <= 30 and fibre.cooldown_until.seconds > 0
    assert [(c.used, c.max) for c in fibre.caps] == [(2, 3)]  # the text and the impression
    assert [(c.channel, c.used, c.max, c.budget) for c in profile.channel_caps] == [
        ("sms", 1, 1, False),
        ("email, sms", 1, 4, True),  # the marketing budget: the text counts against it
    ]
    consent = {c.channel: c for c in profile.consent}
    assert not consent["email"].given and consent["email"].source == "event"
    assert consent["email"].via == common_pb2.CHANNEL_MOBILE_APP
    assert consent["sms"].given and consent["sms"].source == "batch"
    assert [(t.from_stage, t.to_stage) for t in profile.stage_transitions] == [
        (common_pb2.LIFECYCLE_STAGE_EVALUATION, common_pb2.LIFECYCLE_STAGE_PURCHASE)
    ]
    assert profile.stage_transitions[0].reason == "set by the request context"
    assert {d.offer_name for d in profile.recent_decisions} == {"Fibre broadband 900"}
