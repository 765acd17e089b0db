"""RecordEvent retried: callers resend an event after a timeout or an UNAVAILABLE, and two
replicas may both forward one upstream message. With an ``idempotency-key`` in the
call's metadata the event is recorded once, across replicas; without one, each call is
an event of its own, as before."""

from __future__ import annotations

import threading
from collections.abc import Callable

import grpc
import pytest
import redis

from arbiter.v1 import profile_pb2
from tests.conftest import ServerThread, record_event

CUSTOMER = "cust-000042"


def record(server: ServerThread, kind: str, key: str | None) -> None:
    metadata = None if key is None else (("idempotency-key", key),)
    record_event(server, CUSTOMER, kind, metadata=metadata)


def recorded(server: ServerThread, kind: str) -> int:
    profile = server.profiles.GetProfile(
        profile_pb2.GetProfileRequest(customer_id=CUSTOMER), timeout=5
    )
    return sum(1 for e in profile.recent_events if e.event_type == kind)


def test_an_event_resent_under_its_key_counts_once_across_replicas(
    server_factory: Callable[..., ServerThread], loaded: redis.Redis, redis_url: str
) -> None:
    replicas = [server_factory(redis_url), server_factory(redis_url)]
    start = threading.Barrier(12)

    def resend(i: int) -> None:
        start.wait()
        record(replicas[i % 2], "add_to_cart", "order-77")

    threads = [threading.Thread(target=resend, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    record(replicas[0], "add_to_cart", "order-77")  # and once more, later
    assert recorded(replicas[1], "add_to_cart") == 1

    record(replicas[0], "add_to_cart", "order-78")  # another key: another event
    record(replicas[0], "add_to_cart", None)  # no key: every call is an event
    record(replicas[0], "add_to_cart", None)
    assert recorded(replicas[1], "add_to_cart") == 4


def test_a_bad_key_is_refused_naming_the_metadata(memory_server: ServerThread) -> None:
    with pytest.raises(grpc.RpcError) as error:
        record(memory_server, "page_view", "k" * 200)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "metadata idempotency-key" in str(error.value.details())
    assert recorded(memory_server, "page_view") == 0
