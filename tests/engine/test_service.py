"""The service end to end: a real gRPC server and stub, a real model, on the in-memory
store (the same contract as Redis; the Redis path is covered by the contact-policy,
degraded-mode and training tests)."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from arbiter.v1 import common_pb2, decision_pb2, profile_pb2
from tests.conftest import ServerThread

WEB = common_pb2.CHANNEL_WEB
CALL_CENTER = common_pb2.CHANNEL_CALL_CENTER


@pytest.fixture
def server(memory_server: ServerThread) -> ServerThread:
    return memory_server


def decide(
    server: ServerThread, customer_id: str, channel: int = WEB, **fields: object
) -> decision_pb2.DecideResponse:
    request = decision_pb2.DecideRequest(customer_id=customer_id, channel=channel, **fields)  # type: ignore[arg-type]
    return server.decisions.Decide(request, timeout=5)


def test_known_customer_gets_ranked_rendered_actions_with_reasons(server: ServerThread) -> None:
    response = decide(server, "cust-000042", limit=3, explain=True)

    assert not response.degraded
    assert response.model_version == server.application.core.scorer.version
    assert 1 <= len(response.actions) <= 3
    assert [a.rank for a in response.actions] == list(range(1, len(response.actions) + 1))
    priorities = [a.priority for a in response.actions]
    assert priorities == sorted(priorities, reverse=True)
    for action in response.actions:
        assert action.priority == pytest.approx(
            action.propensity
            * action.value
            * server.application.core.catalog.by_id[action.offer_id].lever
        )
        assert 0 < action.propensity < 1
        assert action.message.headline and action.message.url
        codes = {r.code for r in action.reasons}
        assert {"LIFECYCLE_STAGE", "RULE_ELIGIBILITY", "ARBITRATION"} <= codes
        assert "FEATURE_CONTRIBUTION" in codes


def test_call_center_and_web_get_channel_appropriate_messages(server: ServerThread) -> None:
    web = decide(server, "cust-000042", WEB, limit=1)
    agent = decide(server, "cust-000042", CALL_CENTER, limit=1)

    assert web.actions[0].message.call_to_action
    assert web.actions[0].message.url.startswith("https://")
    assert not web.actions[0].message.agent_script
    assert agent.actions[0].message.agent_script
    assert agent.actions[0].message.agent_script != web.actions[0].message.body


def test_sms_body_fits_160_characters(server: ServerThread) -> None:
    for n in range(1, 60):
        response = decide(server, f"cust-{n:06d}", common_pb2.CHANNEL_SMS, limit=3)
        for action in response.actions:
            assert 0 < len(action.message.body) <= 160
            assert not action.message.headline


def test_unknown_customer_is_a_new_visitor_not_an_error(server: ServerThread) -> None:
    response = decide(server, "visitor-7f3a", limit=3)

    assert not response.degraded
    assert not response.known_customer  # said, for a client to tell a mistyped id
    assert decide(server, "cust-000042").known_customer
    assert response.lifecycle_stage == common_pb2.LIFECYCLE_STAGE_CONSIDERATION
    offers = {a.offer_id for a in response.actions}
    assert "welcome_offer" in offers  # audience is_customer == 0
    assert "loyalty_reward" not in offers  # needs a customer with tenure


@pytest.mark.parametrize(
    ("fields", "field_name"),
    [
        ({"customer_id": ""}, "customer_id"),
        ({"customer_id": "x" * 129}, "customer_id"),
        ({"customer_id": "a{b}"}, "customer_id"),
        ({"channel": common_pb2.CHANNEL_UNSPECIFIED}, "channel"),
        ({"channel": 42}, "channel"),
        ({"limit": 51}, "limit"),
        ({"limit": -1}, "limit"),
        ({"context": {f"k{i}": "v" for i in range(33)}}, "context"),
        ({"context": {"page": "x" * 300}}, "context[page]"),
        ({"context": {"stage": "sleeping"}}, "context[stage]"),
        ({"placement": "p" * 65}, "placement"),
        ({"offer_ids": ["fibre_broadband", ""]}, "offer_ids[1]"),
    ],
)
def test_bad_decide_requests_are_invalid_argument_naming_the_field(
    server: ServerThread, fields: dict[str, object], field_name: str
) -> None:
    request = {"customer_id": "cust-000001", "channel": WEB, **fields}
    with pytest.raises(grpc.RpcError) as error:
        server.decisions.Decide(decision_pb2.DecideRequest(**request), timeout=5)  # type: ignore[arg-type]
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert str(error.value.details()).startswith(field_name)
    # ...and the service keeps serving.
    assert decide(server, "cust-000001").actions


def test_limit_zero_means_one_and_offer_ids_restrict(server: ServerThread) -> None:
    assert len(decide(server, "cust-000042", limit=0).actions) == 1
    restricted = decide(server, "visitor-1", limit=5, offer_ids=["app_download", "nope"])
    assert [a.offer_id for a in restricted.actions] == ["app_download"]


def test_explicit_stage_in_context_overrides_rules(server: ServerThread) -> None:
    response = decide(server, "cust-000042", context={"stage": "at_risk"})
    assert response.lifecycle_stage == common_pb2.LIFECYCLE_STAGE_AT_RISK


def record(
    server: ServerThread,
    customer_id: str,
    event_type: str,
    channel: common_pb2.Channel.ValueType = WEB,
    **attrs: str,
) -> None:
    server.profiles.RecordEvent(
        profile_pb2.RecordEventRequest(
            customer_id=customer_id,
            channel=channel,
            event_type=event_type,
            attributes=attrs,
        ),
        timeout=5,
    )


def test_web_event_changes_the_next_call_center_decision(server: ServerThread) -> None:
    before = decide(server, "cust-000042", CALL_CENTER, limit=1, offer_ids=["fibre_broadband"])
    record(server, "cust-000042", "product_view", category="fibre")
    record(server, "cust-000042", "product_view", category="fibre")
    after = decide(server, "cust-000042", CALL_CENTER, limit=1, offer_ids=["fibre_broadband"])

    # Two product views: the customer is now evaluating, and the fibre interest shows.
    assert before.lifecycle_stage == common_pb2.LIFECYCLE_STAGE_CONSIDERATION
    assert after.lifecycle_stage == common_pb2.LIFECYCLE_STAGE_EVALUATION
    assert after.actions[0].propensity > before.actions[0].propensity
    profile = server.profiles.GetProfile(profile_pb2.GetProfileRequest(customer_id="cust-000042"))
    assert profile.features["product_views"] == 2
    assert profile.features["web_events"] == 2
    assert [e.event_type for e in profile.recent_events] == ["product_view", "product_view"]
    assert profile.recent_events[0].attributes["category"] == "fibre"


def test_bad_events_are_rejected_with_the_field(server: ServerThread) -> None:
    future = Timestamp(seconds=4_000_000_000)
    cases = [
        (
            profile_pb2.RecordEventRequest(customer_id="c1", channel=WEB, event_type="Page View"),
            "event_type",
        ),
        (profile_pb2.RecordEventRequest(customer_id="c1", event_type="page_view"), "channel"),
        (
            profile_pb2.RecordEventRequest(
                customer_id="c1", channel=WEB, event_type="x", occurred_at=future
            ),
            "occurred_at",
        ),
    ]
    for request, field_name in cases:
        with pytest.raises(grpc.RpcError) as error:
            server.profiles.RecordEvent(request, timeout=5)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert str(error.value.details()).startswith(field_name)


def report(
    server: ServerThread, decision_id: str, offer_id: str, outcome: int, key: str = ""
) -> decision_pb2.ReportOutcomeResponse:
    return server.decisions.ReportOutcome(
        decision_pb2.ReportOutcomeRequest(
            decision_id=decision_id,
            customer_id="cust-000042",
            offer_id=offer_id,
            outcome=outcome,  # type: ignore[arg-type]
            value=12.5,
            idempotency_key=key,
        ),
        timeout=5,
    )


def test_report_outcome_is_recorded_once_per_idempotency_key(server: ServerThread) -> None:
    decision = decide(server, "cust-000042", limit=1)
    offer = decision.actions[0].offer_id

    first = report(server, decision.decision_id, offer, common_pb2.OUTCOME_CLICK, key="k-1")
    again = report(server, decision.decision_id, offer, common_pb2.OUTCOME_CLICK, key="k-1")
    other = report(server, decision.decision_id, offer, common_pb2.OUTCOME_ACCEPT)

    assert first.recorded and not again.recorded and other.recorded
    assert again.outcome_id == first.outcome_id
    logged = server.read_outcomes()
    assert len(logged) == 2
    assert [e["outcome"] for e in logged] == ["click", "accept"]
    assert logged[0]["value"] == 12.5

    server.flush_log()
    profile = server.profiles.GetProfile(profile_pb2.GetProfileRequest(customer_id="cust-000042"))
    made = [d for d in profile.recent_decisions if d.decision_id == decision.decision_id]
    assert len(made) == 1 and made[0].offer_id == offer
    assert list(made[0].outcomes) == [common_pb2.OUTCOME_CLICK, common_pb2.OUTCOME_ACCEPT]


def test_report_outcome_errors(server: ServerThread) -> None:
    with pytest.raises(grpc.RpcError) as error:
        report(server, "d-1", "no_such_offer", common_pb2.OUTCOME_CLICK)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert "offer_id" in str(error.value.details())
    with pytest.raises(grpc.RpcError) as error:
        report(server, "d-1", "fibre_broadband", common_pb2.OUTCOME_UNSPECIFIED)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert str(error.value.details()).startswith("outcome")
    with pytest.raises(grpc.RpcError) as error:
        report(server, "", "fibre_broadband", common_pb2.OUTCOME_CLICK)
    assert str(error.value.details()).startswith("decision_id")


def test_every_decision_is_logged_with_the_features_as_served(server: ServerThread) -> None:
    record(server, "cust-000007", "search", common_pb2.CHANNEL_MOBILE_APP, category="phones")
    response = decide(
        server, "cust-000007", common_pb2.CHANNEL_MOBILE_APP, limit=2, request_id="r-9"
    )
    server.flush_log()

    (entry,) = server.read_decisions()
    assert entry["decision_id"] == response.decision_id
    assert entry["request_id"] == "r-9"
    assert entry["model_version"] == response.model_version
    assert [a["offer_id"] for a in entry["actions"]] == [a.offer_id for a in response.actions]
    names = server.application.core.schema.names
    features = dict(zip(names, entry["features"], strict=True))
    assert features["searches"] == 1
    assert features["app_events"] == 1
    profile = server.profiles.GetProfile(profile_pb2.GetProfileRequest(customer_id="cust-000007"))
    for name, value in features.items():
        if not name.startswith("seconds_since"):
            assert value == pytest.approx(profile.features[name]), name
    assert entry["stage"] and entry["stage_reason"]
    for action, logged in zip(response.actions, entry["actions"], strict=True):
        answered = {r.code for r in action.reasons}  # reasons on every answer...
        assert {"LIFECYCLE_STAGE", "RULE_ELIGIBILITY", "ARBITRATION"} <= answered
        assert "FEATURE_CONTRIBUTION" not in answered  # ...contributions only on request
        codes = {code for code, *_ in logged["reasons"]}  # and the log keeps why
        assert {"LIFECYCLE_STAGE", "RULE_ELIGIBILITY", "CONTACT_POLICY", "ARBITRATION"} <= codes
        assert "FEATURE_CONTRIBUTION" not in codes  # TreeSHAP only when explain is asked
    scored = {c[0]: c[1] for c in entry["candidates"]}
    for action in response.actions:
        assert scored[action.offer_id] == pytest.approx(action.propensity)


def test_profile_of_an_unknown_customer(server: ServerThread) -> None:
    profile = server.profiles.GetProfile(profile_pb2.GetProfileRequest(customer_id="nobody"))
    assert not profile.known
    assert profile.features["is_customer"] == 0
    assert not profile.recent_events and not profile.recent_decisions


def test_health_and_reflection_list_the_services(server: ServerThread) -> None:
    health = health_pb2_grpc.HealthStub(server.channel)
    for name in ("", "arbiter.v1.DecisionService", "arbiter.v1.ProfileService"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(server.channel)
    replies = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = {s.name for r in replies for s in r.list_services_response.service}
    assert {
        "arbiter.v1.DecisionService",
        "arbiter.v1.ProfileService",
        "grpc.health.v1.Health",
    } <= names
