"""Training rows from the real logs equal what was served: no training/serving skew."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import redis

from arbiter.v1 import common_pb2, decision_pb2, profile_pb2
from common.reward import RewardWindows
from common.vocabulary import POSITIVE_OUTCOMES
from engine.core.model_input import build_matrix
from engine.settings import Definitions
from feature_store.log_reader import read_decisions, read_logs
from tests.conftest import ServerThread, accept
from training.evaluation import contexts_from_logs, evaluate_policies
from training.logs import rewarder, rows_from_redis
from training.simulation import exploring_catalog


def test_a_logged_row_rebuilds_exactly_what_was_served(
    server: ServerThread, loaded: redis.Redis, definitions: Definitions
) -> None:
    accepted: set[tuple[str, str]] = set()
    declined: set[tuple[str, str]] = set()
    for n in range(1, 31):
        cid = f"cust-{n:06d}"
        if n % 3 == 0:
            for category in ("fibre", "phones"):
                server.profiles.RecordEvent(
                    profile_pb2.RecordEventRequest(
                        customer_id=cid,
                        channel=common_pb2.CHANNEL_WEB,
                        event_type="product_view",
                        attributes={"category": category},
                    ),
                    timeout=5,
                )
        response = server.decisions.Decide(
            decision_pb2.DecideRequest(customer_id=cid, channel=common_pb2.CHANNEL_WEB, limit=2),
            timeout=5,
        )
        if not response.actions:
            continue
        first = response.actions[0].offer_id
        outcome = common_pb2.OUTCOME_ACCEPT if n % 2 else common_pb2.OUTCOME_DECLINE
        server.decisions.ReportOutcome(
            decision_pb2.ReportOutcomeRequest(
                decision_id=response.decision_id, customer_id=cid, offer_id=first, outcome=outcome
            ),
            timeout=5,
        )
        (accepted if n % 2 else declined).add((response.decision_id, first))
    server.flush_log()
    logged = {d["decision_id"]: d for d in read_decisions(loaded)}

    rows, report = rows_from_redis(
        loaded, definitions.schema, windows=RewardWindows.uniform(3600), until=time.time() + 3600
    )

    assert report.used == report.decisions == len(logged) > 20
    assert rows.rows == sum(len(d["actions"]) for d in logged.values())
    assert rows.decision_ids is not None
    core = server.application.core
    vocabulary = core.scorer.vocabulary
    assert vocabulary is not None
    for r in range(rows.rows):
        decision = logged[rows.decision_ids[r]]
        row = build_matrix(rows.served[r], [core.catalog.by_id[rows.offer_ids[r]]], vocabulary)
        served = dict((c[0], c[1]) for c in decision["candidates"])[rows.offer_ids[r]]
        assert core.scorer.predict(row)[0] == pytest.approx(served, abs=1e-12)
        key = (rows.decision_ids[r], rows.offer_ids[r])
        assert rows.reward[r] == (key in accepted)
        assert key not in declined or rows.reward[r] == 0
    features = rows.features(len(definitions.schema.names))
    assert np.any(features[:, definitions.schema.names.index("product_views_24h")] == 2)

    # An hour later, every action is a row; now, only the answered ones are: a decision
    # need not wait for its channel's window once its answer is known.
    young, report = rows_from_redis(
        loaded, definitions.schema, windows=RewardWindows.uniform(3600), until=time.time()
    )
    assert report.waiting == 0 and report.used == report.decisions
    assert young.decision_ids is not None
    answered = accepted | declined
    assert {(d, o) for d, o in zip(young.decision_ids, young.offer_ids, strict=True)} == answered
    assert young.rows == len(answered) < rows.rows


def test_the_serving_policy_replayed_on_its_own_logs_gets_weight_one(
    server_factory: Callable[..., ServerThread],
    loaded: redis.Redis,
    redis_url: str,
    definitions: Definitions,
    tmp_path: Path,
) -> None:
    # Softmax exploration on the web, none on the agent's sidebar: evaluated as deployed,
    # the policy that served has, on every logged decision, the probability it logged.
    catalog = exploring_catalog(tmp_path / "catalog.toml", "softmax")
    server = server_factory(redis_url, catalog_path=catalog)
    for n in range(1, 61):
        cid = f"cust-{n:06d}"
        channel, placement = (
            (common_pb2.CHANNEL_WEB, "home_hero")
            if n % 4
            else (common_pb2.CHANNEL_CALL_CENTER, "agent_sidebar")
        )
        response = server.decisions.Decide(
            decision_pb2.DecideRequest(customer_id=cid, channel=channel, placement=placement),
            timeout=5,
        )
        if response.actions and n % 3 == 0:
            accept(server, response, cid)
    server.flush_log()
    decisions, outcomes = read_logs(loaded)
    core = server.application.core
    contexts = contexts_from_logs(
        decisions, rewarder(outcomes, 3600, POSITIVE_OUTCOMES), definitions.schema, core.catalog
    )
    assert len(contexts) > 40
    assert any(c.probability < 1 for c in contexts)  # the web decisions were draws
    assert any(c.placement == "agent_sidebar" and c.probability == 1 for c in contexts)

    as_served = evaluate_policies(
        contexts, {"served": core.scorer}, core.catalog, core.scorer, core.catalog.exploration
    )
    greedy = evaluate_policies(contexts, {"served": core.scorer}, core.catalog, core.scorer)

    realised = as_served["logged"]["realised"].value
    assert realised > 0
    assert as_served["served"]["ips"].value == pytest.approx(realised, abs=1e-9)
    assert as_served["served"]["snips"].value == pytest.approx(realised, abs=1e-9)
    assert greedy["served"]["ips"].value != pytest.approx(realised, abs=1e-6)


def test_an_idempotency_key_counts_once_in_training() -> None:
    decision = {"decision_id": "d1", "ts": 100.0}
    first = {"decision_id": "d1", "offer_id": "a", "outcome": "click", "occurred_at": 101.0}
    outcomes = [
        {**first, "idempotency_key": "k"},
        {**first, "outcome": "accept", "idempotency_key": "k"},  # the same report, again
        {**first, "offer_id": "b", "outcome": "accept", "idempotency_key": "k2"},
    ]
    rewarded = rewarder(outcomes, 3600, POSITIVE_OUTCOMES)
    assert not rewarded(decision, "a")
    assert rewarded(decision, "b")
