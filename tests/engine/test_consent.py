"""Consent in real time, through the real server on a real Redis and two replicas: an
opt-out on the web stops texts at once everywhere, says why, keeps its provenance, and
yields to a newer batch load."""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
import pytest
import redis

from arbiter.v1 import common_pb2, decision_pb2, profile_pb2
from engine.settings import Definitions
from feature_store.loader import load_profiles
from tests.conftest import ServerThread

CUSTOMER = "cust-000001"  # opted in to email and SMS in the batch profiles
SMS, EMAIL, WEB = common_pb2.CHANNEL_SMS, common_pb2.CHANNEL_EMAIL, common_pb2.CHANNEL_WEB


def decide(
    server: ServerThread, channel: common_pb2.Channel.ValueType
) -> decision_pb2.DecideResponse:
    request = decision_pb2.DecideRequest(customer_id=CUSTOMER, channel=channel, explain=True)
    return server.decisions.Decide(request, timeout=5)


def consent(server: ServerThread, event_type: str, target: str) -> None:
    server.profiles.RecordEvent(
        profile_pb2.RecordEventRequest(
            customer_id=CUSTOMER,
            channel=WEB,
            event_type=event_type,
            attributes={"channel": target},
        ),
        timeout=5,
    )


def test_an_opt_out_takes_effect_at_once_on_every_replica(
    server: ServerThread,
    server_factory: Callable[..., ServerThread],
    loaded: redis.Redis,
    redis_url: str,
    definitions: Definitions,
) -> None:
    other = server_factory(redis_url)
    assert decide(other, SMS).actions  # texted (the day's one SMS)

    consent(server, "opt_out", "sms")  # on the website, through one replica

    texted = decide(other, SMS)  # the next decision, on the other
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert not texted.actions
    assert reasons(texted) == [f"consent: opted out of sms on {today} (via web)"]
    assert decide(other, EMAIL).actions  # email was not withdrawn (1 of 2 this week)
    profile = other.profiles.GetProfile(profile_pb2.GetProfileRequest(customer_id=CUSTOMER))
    assert profile.features["sms_opt_in"] == 0  # the agent sees the customer's latest word

    consent(server, "opt_out", "all")
    assert reasons(decide(other, EMAIL))[0].startswith("consent: opted out of email")
    consent(server, "opt_in", "sms")
    assert reasons(decide(other, SMS)) == ["sms cap reached: 1 of 1 per 1 day"]  # not consent
    assert reasons(decide(other, EMAIL))[0].startswith("consent: opted out of email")

    # A batch load after the events is newer: its values stand again.
    time.sleep(1.1)  # the load stamps whole seconds
    load_profiles(loaded, definitions.schema, [(CUSTOMER, {"email_opt_in": 1.0}, {})])
    assert decide(other, EMAIL).actions


def reasons(response: decision_pb2.DecideResponse) -> list[str]:
    return [e.reason for e in response.excluded if e.offer_id == "*"]


def test_a_consent_event_must_name_its_channel(server: ServerThread) -> None:
    with pytest.raises(grpc.RpcError) as error:
        consent(server, "opt_out", "carrier pigeon")
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert str(error.value.details()).startswith("attributes[channel]")
