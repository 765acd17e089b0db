"""Every offer's model, watched: evidence, success rate, AUC and calibration per offer and
channel from the logs as served, a drift flag, on /metrics, in `arbiter models` and as an
HTML report."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import redis

from arbiter.v1 import common_pb2, decision_pb2
from common.reward import RewardWindows
from feature_store.log_reader import read_logs
from tests.conftest import ServerThread, report, sample, scrape
from training import monitor
from training.cli import main


def decisions(n: int, offer: str, channel: str, propensity: float, t: float) -> list[dict]:  # type: ignore[type-arg]
    return [
        {
            "decision_id": f"{offer}-{channel}-{i}",
            "ts": t + i,
            "channel": channel,
            "actions": [{"offer_id": offer, "propensity": propensity}],
        }
        for i in range(n)
    ]


def accepts(logged: list[dict], every: int) -> list[dict]:  # type: ignore[type-arg]
    return [
        {
            "decision_id": d["decision_id"],
            "offer_id": d["actions"][0]["offer_id"],
            "outcome": "accept",
            "occurred_at": d["ts"] + 1,
            "idempotency_key": d["decision_id"],
        }
        for d in logged[::every]
    ]


def test_a_model_that_promises_more_than_customers_give_is_flagged() -> None:
    t = 1_000_000.0
    honest = decisions(400, "fibre", "web", 0.25, t)  # one in four accepts: as promised
    boasting = decisions(400, "phone", "web", 0.5, t)  # promises one in two, gets one in ten
    young = decisions(30, "tv", "email", 0.2, t)  # too little evidence to flag anything
    outcomes = accepts(honest, 4) + accepts(boasting, 10)
    windows = RewardWindows.of({}, 72)

    found = monitor.offer_health(
        honest + boasting + young + decisions(5, "old", "web", 0.2, t - 86400 * 8),
        outcomes,
        windows,
        now=t + 86400,
        since=t,
        model_version="v1",  # its AUC unknown: only calibration can flag here
    )

    by = {(o.offer_id, o.channel): o for o in found.offers}
    assert set(by) == {("fibre", "web"), ("phone", "web"), ("tv", "email")}  # "old": too old
    assert by["fibre", "web"].success_rate == pytest.approx(0.25)
    assert by["fibre", "web"].calibration_error == pytest.approx(0.0, abs=1e-9)
    assert not by["fibre", "web"].drift
    assert by["phone", "web"].positives == 40 and by["phone", "web"].answered == 400
    assert by["phone", "web"].calibration_error == pytest.approx(0.4)
    assert "calibration error 0.400 > 0.05" in by["phone", "web"].drift
    # Email waits three days for an answer: a day after, nothing has matured.
    assert by["tv", "email"].decisions == 30 and by["tv", "email"].answered == 0
    assert not by["tv", "email"].drift
    assert monitor.HealthReport.from_json(found.to_json()).to_json() == found.to_json()
    text = monitor.table(found)
    assert "! phone" in text and "1 of 3 flagged" in text


def test_an_offer_whose_ranking_is_lost_is_flagged() -> None:
    t = 1_000_000.0
    rng = np.random.default_rng(1)
    logged = []
    outcomes = []
    for i in range(600):
        p = float(rng.uniform(0.05, 0.5))
        logged.append({"decision_id": f"d{i}", "ts": t + i, "channel": "web",
                       "actions": [{"offer_id": "fibre", "propensity": p}]})  # fmt: skip
        if rng.random() < 0.5 - p + 0.05:  # the lower the promise, the likelier the accept
            outcomes.append({"decision_id": f"d{i}", "offer_id": "fibre", "outcome": "accept",
                             "occurred_at": t + i + 1})  # fmt: skip

    found = monitor.offer_health(
        logged, outcomes, RewardWindows.of({}, 72), now=t + 7200, since=t, model_auc=0.75
    )

    (fibre,) = found.offers
    assert fibre.auc < 0.4
    assert f"AUC {fibre.auc:.3f} more than 0.1 below the model's 0.750" in fibre.drift


def test_a_training_run_publishes_it_to_metrics_and_to_arbiter_models(
    server_factory: Callable[..., ServerThread],
    loaded: redis.Redis,
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = server_factory(redis_url, metrics_port=0)
    for n in range(1, 121):
        response = server.decisions.Decide(
            decision_pb2.DecideRequest(customer_id=f"cust-{n:06d}", channel=common_pb2.CHANNEL_WEB),
            timeout=5,
        )
        if response.actions and n % 3 == 0:
            report(server, response, f"cust-{n:06d}", common_pb2.OUTCOME_ACCEPT)
    server.flush_log()
    assert server.metrics_port
    before = scrape(server.metrics_port)
    assert sample(before, "arbiter_offer_health_computed_timestamp_seconds") == 0

    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("ARBITER_DATA_DIR", str(tmp_path))
    html = tmp_path / "offers.html"
    assert main(["models", "offers", "--days", "1", "--html", str(html)]) == 0

    printed = capsys.readouterr().out
    assert "each offer's model over the last 1 days" in printed
    published = monitor.published(loaded)
    assert published is not None and published.offers
    decided, _ = read_logs(loaded)
    assert sum(o.decisions for o in published.offers) == sum(len(d["actions"]) for d in decided)
    assert sum(o.positives for o in published.offers) == 40
    page = html.read_text()
    assert page.count("<svg") == 2 and "AUC against success rate" in page
    # Every server's /metrics shows it (read at most every 15 s: a new server reads now).
    fresh = server_factory(redis_url, metrics_port=0)
    assert fresh.metrics_port
    time.sleep(0.1)
    after = scrape(fresh.metrics_port)
    assert sample(after, "arbiter_offer_health_computed_timestamp_seconds") > 0
    for o in published.offers:
        labels = {"offer": o.offer_id, "channel": o.channel}
        assert sample(after, "arbiter_offer_positive_answers", **labels) == o.positives
        assert sample(after, "arbiter_offer_answered_decisions", **labels) == o.answered
    # `arbiter models` shows the latest report.
    assert main(["models"]) == 0
    assert "flagged (calibration error > 0.05" in capsys.readouterr().out
