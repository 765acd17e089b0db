"""Outcomes nobody can forge, and each recorded once: through the real server on a real
Redis, as a hostile or a retrying caller would send them."""

from __future__ import annotations

import threading
import time

import grpc
import pytest
import redis
from google.protobuf.timestamp_pb2 import Timestamp

from arbiter.v1 import common_pb2, decision_pb2
from feature_store import keys
from feature_store.log_reader import read_outcomes
from tests.conftest import ServerThread

CUSTOMER = "cust-000042"  # fibre_broadband is eligible for this customer everywhere


def decide(server: ServerThread, customer_id: str = CUSTOMER) -> decision_pb2.DecideResponse:
    request = decision_pb2.DecideRequest(
        customer_id=customer_id, channel=common_pb2.CHANNEL_WEB, limit=2
    )
    return server.decisions.Decide(request, timeout=5)


def report(
    server: ServerThread,
    decision_id: str,
    offer_id: str,
    customer_id: str = CUSTOMER,
    **fields: object,
) -> decision_pb2.ReportOutcomeResponse:
    request = decision_pb2.ReportOutcomeRequest(
        decision_id=decision_id,
        customer_id=customer_id,
        offer_id=offer_id,
        outcome=common_pb2.OUTCOME_ACCEPT,
        **fields,  # type: ignore[arg-type]
    )
    return server.decisions.ReportOutcome(request, timeout=5)


def refused(
    server: ServerThread,
    decision_id: str,
    offer_id: str,
    customer_id: str = CUSTOMER,
    **fields: object,
) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as error:
        report(server, decision_id, offer_id, customer_id, **fields)
    return error.value.code(), str(error.value.details())


def flip(text: str, at: int) -> str:
    """Another character at ``at``, valid in hex and base64url alike: well-formed, wrong."""
    return text[:at] + ("1" if text[at] != "1" else "2") + text[at + 1 :]


def test_a_forged_or_tampered_decision_changes_nothing(
    server: ServerThread, loaded: redis.Redis
) -> None:
    decision = decide(server)
    offer = decision.actions[0].offer_id
    other = decision.actions[1].offer_id
    candidates = ("fibre_broadband", "roaming_pack", "device_upgrade_5g")
    not_made = next(o for o in candidates if o not in (offer, other))
    # d1_<time>_<nonce>_<key>_<tags>: the tags may hold "_" themselves (base64url)
    tags_at = len("_".join(decision.decision_id.split("_", 4)[:4])) + 1
    tampered_tag = flip(decision.decision_id, tags_at)  # the first action's tag
    tampered_time = flip(decision.decision_id, 3)  # when it was made

    assert refused(server, "forged-no-such-decision", offer)[0] == grpc.StatusCode.NOT_FOUND
    # an altered tag: that action is no longer the decision's; an altered time: none is
    for tampered, field in ((tampered_tag, "offer_id"), (tampered_time, "decision_id")):
        code, message = refused(server, tampered, offer)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and message.startswith(field), message
    code, message = refused(server, decision.decision_id, not_made)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    said = f"offer_id: {not_made!r} was not an action of that decision (its actions: "
    assert message.startswith(said), message
    assert sorted(message[len(said) : -1].split(", ")) == sorted(
        a.offer_id for a in decision.actions
    )
    # the id is this customer's: another customer cannot report on it, and is told so
    code, message = refused(server, decision.decision_id, offer, "cust-000043")
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message.startswith("decision_id: not a decision made for 'cust-000043'"), message

    assert read_outcomes(loaded) == []
    assert loaded.hgetall(keys.customer_key(CUSTOMER, keys.POLICY)) == {}
    assert offer in [a.offer_id for a in decide(server).actions]  # still offered
    # the genuine report is taken, for either action
    assert report(server, decision.decision_id, other).recorded
    assert report(server, decision.decision_id, offer).recorded


def stamp(seconds: float, nanos: int = 0) -> Timestamp:
    return Timestamp(seconds=int(seconds), nanos=nanos)


def test_times_and_values_that_cannot_be(server: ServerThread) -> None:
    decision = decide(server)
    ids = (decision.decision_id, decision.actions[0].offer_id)
    decided = time.time()

    code, message = refused(server, *ids, occurred_at=stamp(decided - 60))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and message.startswith("occurred_at")
    assert refused(server, *ids, occurred_at=stamp(decided + 3600))[1].startswith("occurred_at")
    code, message = refused(server, *ids, occurred_at=stamp(decided, nanos=-5))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "nanos" in message
    assert refused(server, *ids, value=float("nan"))[1].startswith("value")
    assert refused(server, *ids, value=1e15)[1].startswith("value")
    assert report(server, *ids, value=129.99).recorded


def test_the_same_report_sent_twice_at_once_is_recorded_once(
    server: ServerThread, loaded: redis.Redis
) -> None:
    decisions = [decide(server, f"cust-{n:06d}") for n in range(1, 41)]
    decisions = [d for d in decisions if d.actions]
    answers: list[decision_pb2.ReportOutcomeResponse] = []
    barrier = threading.Barrier(2)

    def send(d: decision_pb2.DecideResponse) -> None:
        barrier.wait()
        answers.append(report(server, d.decision_id, d.actions[0].offer_id, d.customer_id))

    for d in decisions:
        pair = [threading.Thread(target=send, args=(d,)) for _ in range(2)]
        for thread in pair:
            thread.start()
        for thread in pair:
            thread.join()

    assert sum(a.recorded for a in answers) == len(decisions) > 20
    logged = read_outcomes(loaded)
    assert len(logged) == len(decisions)
    assert len({o["idempotency_key"] for o in logged}) == len(decisions)


def test_a_report_cut_off_before_its_log_entry_is_logged_by_its_retry(
    server: ServerThread, loaded: redis.Redis
) -> None:
    """A first report that took its lease and never logged (its server stopped under it):
    a retry is told to retry (UNAVAILABLE), not that it was a duplicate, and once the lease
    lapses the retry logs it, once."""
    d = decide(server)
    offer = d.actions[0].offer_id
    key = keys.idempotency_key(CUSTOMER, f"{d.decision_id}:{offer}:accept")
    loaded.set(key, f"pending:cut-off:{time.time() + 60}", ex=3600)  # what it left

    code, details = refused(server, d.decision_id, offer)
    assert code == grpc.StatusCode.UNAVAILABLE and "retry" in details, details
    assert read_outcomes(loaded) == []
    loaded.set(key, f"pending:cut-off:{time.time() - 1}", ex=3600)  # the lease lapsed
    assert report(server, d.decision_id, offer).recorded
    assert not report(server, d.decision_id, offer).recorded  # and once only
    assert [o["decision_id"] for o in read_outcomes(loaded)] == [d.decision_id]
