"""`/metrics` and the logs after real calls: what an operator reads off a replica (counts
are deltas: the metrics are the test process's, shared by every server it starts)."""

from __future__ import annotations

import gc
import io
import json
import logging
from collections.abc import Callable

import grpc
import pytest
import redis
from prometheus_client import REGISTRY

from arbiter.v1 import common_pb2, decision_pb2
from common.logs import JsonLines
from engine.service import metrics
from engine.settings import ServerSettings
from feature_store import redis_client
from feature_store.embedded import EmbeddedRedis
from tests.conftest import ServerThread, accept, record_event, sample, scrape


def decide(server: ServerThread, customer: str) -> decision_pb2.DecideResponse:
    request = decision_pb2.DecideRequest(
        customer_id=customer, channel=common_pb2.CHANNEL_WEB, limit=3
    )
    return server.decisions.Decide(request, timeout=5)


def test_calls_events_outcomes_stages_and_versions_are_counted(
    server_factory: Callable[..., ServerThread], loaded: redis.Redis, redis_url: str
) -> None:
    server = server_factory(redis_url, metrics_port=0)
    assert server.metrics_port
    before = scrape(server.metrics_port)

    answers = [decide(server, f"cust-{n:06d}") for n in range(1, 4)]
    with pytest.raises(grpc.RpcError):
        decide(server, "")  # INVALID_ARGUMENT: customer_id is required
    for kind in ("product_view", "product_view", "a_type_nobody_declared"):
        record_event(server, "cust-000001", kind)
    accept(server, answers[0], "cust-000001")
    accept(server, answers[0], "cust-000001")  # the same report again: not a new outcome
    server.flush_log()
    after = scrape(server.metrics_port)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert delta("arbiter_rpc_seconds_count", method="Decide", code="OK") == 3
    assert delta("arbiter_rpc_seconds_count", method="Decide", code="INVALID_ARGUMENT") == 1
    assert delta("arbiter_rpc_seconds_count", method="RecordEvent", code="OK") == 3
    assert delta("arbiter_rpc_seconds_count", method="ReportOutcome", code="OK") == 2
    for stage in ("fetch", "scoring", "reserve"):
        assert delta("arbiter_stage_seconds_count", stage=stage) == 3, stage
    assert delta("arbiter_events_recorded_total", event_type="product_view") == 2
    assert delta("arbiter_events_recorded_total", event_type="other") == 1  # bounded labels
    assert delta("arbiter_outcomes_total", outcome="accept") == 1
    assert delta("arbiter_decision_log_written_total") == 3
    assert delta("arbiter_holds_total") == sum(len(a.actions) for a in answers)
    core = server.application.core
    served = sample(
        after,
        "arbiter_model_info",
        role="champion",
        model=core.scorer.version,
        catalog=core.catalog.version,
    )
    assert served == 1


def test_a_degraded_replica_shows_why(
    server_factory: Callable[..., ServerThread],
) -> None:
    own = EmbeddedRedis().start()
    server = server_factory(own.url, metrics_port=0, breaker_seconds=60)
    assert server.metrics_port
    before = scrape(server.metrics_port)
    own.stop()

    answer = decide(server, "cust-000042")
    assert answer.degraded
    after = scrape(server.metrics_port)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert delta("arbiter_degraded_answers_total", reason="store_unavailable") == 1
    assert delta("arbiter_breaker_opened_total") == 1
    assert sample(after, "arbiter_breaker_open") == 1


def test_json_log_lines_carry_the_caller_s_request_id(
    server_factory: Callable[..., ServerThread],
) -> None:
    """ARBITER_LOG_FORMAT=json: what the server logs while serving a call names the
    request id its caller sent (x-request-id), so an operator finds a call's lines."""
    own = EmbeddedRedis().start()
    server = server_factory(own.url)
    own.stop()
    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    handler.setFormatter(JsonLines())
    logging.getLogger().addHandler(handler)
    redis_client._last_logged.clear()  # the store's failures are logged once per interval
    try:
        request = decision_pb2.DecideRequest(customer_id="cust-1", channel=common_pb2.CHANNEL_WEB)
        answer = server.decisions.Decide(request, timeout=5, metadata=(("x-request-id", "req-42"),))
    finally:
        logging.getLogger().removeHandler(handler)
    assert answer.degraded
    logged = [json.loads(line) for line in lines.getvalue().splitlines()]
    failures = [e for e in logged if e["logger"] == "engine.service.breaker"]  # "down"
    assert failures and failures[0]["level"] == "WARNING", logged
    assert failures[0]["request_id"] == "req-42"
    assert all(e.get("request_id") in (None, "req-42") for e in logged)


@pytest.mark.parametrize(("value", "port"), [("off", None), ("", None), ("0", 0), ("9999", 9999)])
def test_the_metrics_port_can_be_turned_off(
    monkeypatch: pytest.MonkeyPatch, value: str, port: int | None
) -> None:
    monkeypatch.setenv("ARBITER_METRICS_PORT", value)
    assert ServerSettings().metrics_port == port


def test_every_garbage_collection_is_timed_by_generation() -> None:
    def count(generation: str) -> float:
        labels = {"generation": generation}
        return REGISTRY.get_sample_value("arbiter_gc_pause_seconds_count", labels) or 0.0

    before = count("2"), count("0")
    watching = len(gc.callbacks)
    drain = metrics.watch_collections()
    try:
        gc.collect()  # a full collection
        gc.collect(0)
        assert count("2") == before[0]  # timed, not yet observed (see watch_collections)
        drain()
        assert count("2") == before[0] + 1 and count("0") >= before[1] + 1
    finally:
        del gc.callbacks[watching:]
