"""The right words for the moment: through the API, each channel at each stage says what
the catalog gives that channel for that stage, and names the variant it used."""

from __future__ import annotations

import pytest

from arbiter.v1 import decision_pb2
from engine.api import proto
from engine.core.rendering import variant
from engine.settings import ServerSettings, load_definitions
from tests.conftest import ServerThread

# Fibre is eligible for these customers everywhere (no fibre at home, opted in to email
# and SMS); one customer per stage, so the day's one SMS is each one's own.
CUSTOMERS = {"consideration": "cust-000001", "evaluation": "cust-000002", "purchase": "cust-000009"}
OFFER = "fibre_broadband"


@pytest.fixture
def server(memory_server: ServerThread) -> ServerThread:
    return memory_server


def message(server: ServerThread, channel: str, stage: str) -> decision_pb2.Message:
    request = decision_pb2.DecideRequest(
        customer_id=CUSTOMERS[stage],
        channel=proto.channel(channel),
        offer_ids=[OFFER],
        context={"stage": stage},
    )
    response = server.decisions.Decide(request, timeout=5)
    assert [a.offer_id for a in response.actions] == [OFFER], (channel, stage)
    assert response.lifecycle_stage == proto.stage(stage)
    return response.actions[0].message


def text(m: decision_pb2.Message) -> tuple[str, ...]:
    return (m.headline, m.body, m.call_to_action, m.url, m.agent_script)


@pytest.mark.parametrize("channel", ["web", "mobile_app", "call_center", "email", "sms"])
def test_every_channel_says_the_stage_s_words_where_the_catalog_has_them(
    server: ServerThread, channel: str
) -> None:
    offer = server.application.core.catalog.by_id[OFFER]
    default = message(server, channel, "consideration")
    assert default.treatment_id == f"{OFFER}/{channel}/default"
    for stage in ("evaluation", "purchase"):
        staged = message(server, channel, stage)
        assert staged.treatment_id == f"{OFFER}/{channel}/{variant(offer, channel, stage)}"
        assert variant(offer, channel, stage) == stage  # the demo catalog has copy for it
        assert text(staged) != text(default), (channel, stage)
    if channel == "sms":
        assert default.sms_encoding == "GSM-7" and len(default.body) <= 160


def test_a_stage_without_copy_for_a_channel_says_default() -> None:
    catalog = load_definitions(ServerSettings()).catalog
    offer = catalog.by_id["welcome_offer"]  # its evaluation copy is for web, app and agents
    assert variant(offer, "call_center", "evaluation") == "evaluation"
    assert variant(offer, "web", "post_purchase") == "default"
