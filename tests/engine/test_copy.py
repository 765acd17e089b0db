"""The right words for the moment: through the API, every offer on each of its channels at
each stage it may be made in says that stage's words from the demo catalog, and names the
variant it used."""

from __future__ import annotations

import asyncio
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
import tomli_w

from arbiter.v1 import decision_pb2
from common.vocabulary import STAGES
from engine.api import proto
from engine.core.catalog import Offer
from engine.core.decision import DecisionRequest
from engine.core.rendering import variant
from engine.settings import ServerSettings, load_definitions
from feature_store.memory_store import MemoryStore
from tests.conftest import ServerThread
from training.world import World


@pytest.fixture
def server(
    server_factory: Callable[..., ServerThread],
    memory: MemoryStore,
    daytime_catalog: Path,
    tmp_path: Path,
) -> ServerThread:
    """The demo catalog in daytime without caps or budget: this test is about words, and
    one customer hears each offer on every channel at every stage."""
    doc = tomllib.loads(daytime_catalog.read_text())
    policy = doc["contact_policy"]
    policy["offer_defaults"]["caps"] = []
    del policy["channel_caps"], policy["budget"]
    path = tmp_path / "catalog.toml"
    path.write_text(tomli_w.dumps(doc))
    return server_factory(memory, catalog_path=path)


def stages_of(offer: Offer) -> list[str]:
    return [s for s in STAGES if not offer.stages or s in offer.stages]


def customer_for(server: ServerThread, memory: MemoryStore, world: World, offer: Offer) -> str:
    """A customer (or a prospect) to whom ``offer`` may be made on all its channels at all
    its stages."""
    core, now = server.application.core, time.time()
    combinations = [(c, s) for c in sorted(offer.channels) for s in stages_of(offer)]
    prospect = "visitor-0001"  # unknown to the store: not a customer yet
    for customer_id in [prospect, *(c for c, _, _ in world.profiles())]:
        record = asyncio.run(memory.fetch(customer_id, now))
        if all(
            core.decide(
                DecisionRequest(customer_id, c, offer_ids=(offer.offer_id,), context={"stage": s}),
                record,
                now,
            ).actions
            for c, s in combinations
        ):
            return customer_id
    raise AssertionError(f"no customer in the test world may get {offer.offer_id}")


def message(
    server: ServerThread, customer_id: str, offer_id: str, channel: str, stage: str
) -> decision_pb2.Message:
    request = decision_pb2.DecideRequest(
        customer_id=customer_id,
        channel=proto.channel(channel),
        offer_ids=[offer_id],
        context={"stage": stage},
    )
    response = server.decisions.Decide(request, timeout=5)
    assert [a.offer_id for a in response.actions] == [offer_id], (channel, stage)
    assert response.lifecycle_stage == proto.stage(stage)
    return response.actions[0].message


def text(m: decision_pb2.Message) -> tuple[str, ...]:
    return (m.headline, m.body, m.call_to_action, m.url, m.agent_script)


def test_every_offer_has_its_words_for_every_channel_and_stage_it_is_made_in(
    server: ServerThread, memory: MemoryStore, world: World
) -> None:
    checked = 0
    for offer in server.application.core.catalog.offers:
        customer_id = customer_for(server, memory, world, offer)
        first, *others = stages_of(offer)  # the default copy is the first stage's
        for channel in sorted(offer.channels):
            default = message(server, customer_id, offer.offer_id, channel, first)
            assert default.treatment_id == f"{offer.offer_id}/{channel}/default"
            for stage in others:
                staged = message(server, customer_id, offer.offer_id, channel, stage)
                assert staged.treatment_id == f"{offer.offer_id}/{channel}/{stage}"
                assert text(staged) != text(default), (offer.offer_id, channel, stage)
                checked += 1
                if channel == "sms":  # one GSM-7 segment, whatever the stage
                    assert staged.sms_encoding == "GSM-7" and len(staged.body) <= 160
            if channel == "sms":
                assert default.sms_encoding == "GSM-7" and len(default.body) <= 160
    assert checked > 100  # (offer, channel, stage) triples with their own copy


def test_a_stage_without_copy_for_a_channel_says_default() -> None:
    catalog = load_definitions(ServerSettings()).catalog
    offer = catalog.by_id["welcome_offer"]  # its evaluation copy is for web, app and agents
    assert variant(offer, "call_center", "evaluation") == "evaluation"
    assert variant(offer, "web", "post_purchase") == "default"
