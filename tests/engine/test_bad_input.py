"""What hostile or broken callers send: bytes that are no protobuf at all, and valid
messages with any values. Each gets a status a client can act on, never UNKNOWN or
INTERNAL, and the service keeps serving. (A long version runs in `make chaos`.)"""

from __future__ import annotations

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arbiter.v1 import common_pb2, decision_pb2, profile_pb2
from tests.conftest import ServerThread

ACCEPTED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
UNARY = (
    "/arbiter.v1.DecisionService/Decide",
    "/arbiter.v1.DecisionService/ReportOutcome",
    "/arbiter.v1.ProfileService/GetProfile",
    "/arbiter.v1.ProfileService/RecordEvent",
)


@pytest.fixture
def server(memory_server: ServerThread) -> ServerThread:
    return memory_server


def raw_call(server: ServerThread, method: str, payload: bytes) -> grpc.StatusCode:
    call = server.channel.unary_unary(method, None, None)  # bytes in, bytes out
    try:
        call(payload, timeout=5)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_bytes_that_are_no_message_are_invalid_argument(server: ServerThread) -> None:
    call = server.channel.unary_unary("/arbiter.v1.DecisionService/Decide", None, None)
    with pytest.raises(grpc.RpcError) as error:
        call(b"\xff\xff\xff", timeout=5)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details() == "request: cannot be decoded as arbiter.v1.DecideRequest"
    assert server.running.interceptor.decode_failures.count == 1
    # invalid UTF-8 in a string field is refused by protobuf too
    assert raw_call(server, UNARY[0], b"\x0a\x02\xc3\x28") == grpc.StatusCode.INVALID_ARGUMENT


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(method=st.sampled_from(UNARY), payload=st.binary(max_size=200))
def test_any_bytes_get_a_status_a_client_can_act_on(
    server: ServerThread, method: str, payload: bytes
) -> None:
    assert raw_call(server, method, payload) in ACCEPTED


names = st.text(max_size=40)
fields = st.fixed_dictionaries(
    {
        "customer_id": names,
        "channel": st.integers(-3, 9),
        "placement": names,
        "context": st.dictionaries(names, names, max_size=4),
        "limit": st.integers(-(2**31), 2**31 - 1),
        "offer_ids": st.lists(names, max_size=4),
        "request_id": names,
        "explain": st.booleans(),
    }
)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(request=fields)
def test_any_decide_message_gets_a_status_a_client_can_act_on(
    server: ServerThread, request: dict[str, object]
) -> None:
    message = decision_pb2.DecideRequest(**request)  # type: ignore[arg-type]
    assert raw_call(server, UNARY[0], message.SerializeToString()) in ACCEPTED


def test_a_bad_frame_inside_a_batch_is_answered_in_place(server: ServerThread) -> None:
    def frame(customer_id: str) -> bytes:
        request = decision_pb2.DecideRequest(
            customer_id=customer_id, channel=common_pb2.CHANNEL_EMAIL
        )
        return decision_pb2.DecideBatchRequest(request=request).SerializeToString()

    stream = server.channel.stream_stream(
        "/arbiter.v1.DecisionService/DecideBatch",
        None,  # frames go as bytes
        decision_pb2.DecideBatchResponse.FromString,
    )
    answers = list(
        stream(iter([frame("cust-000001"), b"\xff\xfe", frame("cust-000002")]), timeout=10)
    )

    assert [a.customer_id for a in answers] == ["cust-000001", "", "cust-000002"]
    assert answers[1].error.code == "INVALID_ARGUMENT"
    assert answers[1].error.message.startswith("request: cannot be decoded")
    assert not answers[0].HasField("error") and not answers[2].HasField("error")
    # and the service keeps serving
    profile = server.profiles.GetProfile(
        profile_pb2.GetProfileRequest(customer_id="cust-000001"), timeout=5
    )
    assert profile.known
