"""The right to be forgotten, through the real server on a real Redis: everything kept
about a customer goes, the logs that feed training included, and asking twice is fine."""

from __future__ import annotations

import time

import redis

from arbiter.v1 import common_pb2, decision_pb2, profile_pb2
from common.reward import RewardWindows
from engine.settings import Definitions
from tests.conftest import ServerThread, accept
from training.logs import rows_from_redis

CUSTOMER = "cust-000042"


def test_a_forgotten_customer_is_gone_from_state_and_training(
    server: ServerThread, loaded: redis.Redis, definitions: Definitions
) -> None:
    server.profiles.RecordEvent(
        profile_pb2.RecordEventRequest(
            customer_id=CUSTOMER, channel=common_pb2.CHANNEL_WEB, event_type="product_view"
        ),
        timeout=5,
    )
    for customer in (CUSTOMER, "cust-000043"):
        request = decision_pb2.DecideRequest(customer_id=customer, channel=common_pb2.CHANNEL_WEB)
        accept(server, server.decisions.Decide(request, timeout=5), customer)

    forget = profile_pb2.ForgetCustomerRequest(customer_id=CUSTOMER)
    first = server.profiles.ForgetCustomer(forget, timeout=10)
    again = server.profiles.ForgetCustomer(forget, timeout=10)

    assert {"profile", "rt", "events", "decisions", "outcomes", "policy"} <= set(first.removed)
    assert first.decision_log_entries == 1 and first.outcome_log_entries == 1
    assert first.idempotency_keys == 1
    assert list(again.removed) == [] and again.decision_log_entries == 0
    assert loaded.keys(f"arb:{{{CUSTOMER}}}:*") == []
    profile = server.profiles.GetProfile(profile_pb2.GetProfileRequest(customer_id=CUSTOMER))
    assert not profile.known and not profile.recent_events and not profile.recent_decisions
    rows, report = rows_from_redis(
        loaded, definitions.schema, windows=RewardWindows.uniform(0.0), until=time.time() + 1
    )
    assert report.decisions == 1  # the other customer's decision only
    assert rows.rows == 1
