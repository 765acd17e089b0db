"""The learner against a real Redis and a real server: a new offer that callers accept is
served more and more through the public API, each answer counts once across a restart,
one customer's flood moves the layer by a bounded amount, a rollback, the learner down
said on /metrics, and its process started again when it dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import redis

from arbiter.v1 import common_pb2, decision_pb2
from common.reward import RewardWindows
from engine.service.learner import Learner, ask_rollback, read_published
from engine.service.learner_process import LearnerChild
from feature_store import keys, log_codec
from feature_store.redis_client import connect_sync
from tests.conftest import ServerThread, catalog_variant, report, sample, scrape
from training.cli import main as cli_main

NEW_OFFER = """
[[offer]]
id = "speed_boost"
name = "Speed boost"
category = "plan"
tags = ["data"]
value = 60
channels = ["web"]
[offer.message]
headline = "Twice the speed, same price"
body = "Try a speed boost for a month."
call_to_action = "Boost me"
"""
WINDOW = 0.05  # seconds a decision waits for its answer, here


def thompson_catalog(path: Path, *, new_offer: bool = True, repeatable: bool = False) -> Path:
    """The demo catalog exploring by Thompson sampling (new offers mature at 10 positives),
    with the new offer ``speed_boost``; ``repeatable``: offers may be made and accepted
    again and again (no caps, cool-down or suppression)."""
    replacements = {"mature_positives = 20": "mature_positives = 10"}
    if repeatable:
        replacements |= {
            "caps = [{ days = 7, max = 3 }]\ncooldown_days = 30\nsuppress_after_accept = true": (
                "caps = [{ days = 7, max = 100000 }]\ncooldown_days = 0\n"
                "suppress_after_accept = false"
            )
        }
    catalog_variant(path, replacements)
    if new_offer:
        path.write_text(path.read_text() + NEW_OFFER)
    return path


def learner(redis_url: str, window: float = WINDOW, **overrides: Any) -> Learner:
    return Learner(connect_sync(redis_url), RewardWindows.uniform(window), **overrides)


def decide(server: ServerThread, customer: str) -> decision_pb2.DecideResponse:
    return server.decisions.Decide(
        decision_pb2.DecideRequest(
            customer_id=customer, channel=common_pb2.CHANNEL_WEB, placement="home_hero"
        ),
        timeout=5,
    )


def learnt(server: ServerThread, the_learner: Learner) -> int:
    """The decisions logged, the answers matured and learnt, the new layer served."""
    server.flush_log()
    time.sleep(WINDOW * 2)
    n = the_learner.tick()
    watch = server.running.layer_watch
    assert watch is not None
    server.run(watch.check())
    return n


def test_an_offer_callers_accept_is_served_more_and_more(
    server_factory: Callable[..., ServerThread],
    loaded: redis.Redis,
    redis_url: str,
    tmp_path: Path,
    model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The offer added to the catalog is unknown to the model; callers accept it whenever
    it is shown and decline the others. Within a dozen rounds of answers it is served to
    more than half of the customers (through Decide, the public API)."""
    server = server_factory(redis_url, catalog_path=thompson_catalog(tmp_path / "catalog.toml"))
    the_learner = learner(redis_url)
    rng = np.random.default_rng(5)
    shares: list[float] = []
    while len(shares) < 12 and (not shares or shares[-1] <= 0.5):  # rounds of 80 answers
        served = 0
        for index in rng.choice(1500, size=80, replace=False).tolist():
            customer = f"cust-{index + 1:06d}"
            decision = decide(server, customer)
            if not decision.actions:
                continue
            new = decision.actions[0].offer_id == "speed_boost"
            served += new
            outcome = common_pb2.OUTCOME_ACCEPT if new else common_pb2.OUTCOME_DECLINE
            report(server, decision, customer, outcome)
        shares.append(served / 80)
        learnt(server, the_learner)
    assert shares[0] < 0.25, shares  # ramped in
    assert shares[-1] > 0.5 and shares[-1] > 2 * shares[0], shares
    published = read_published(connect_sync(redis_url))
    assert published is not None
    version = server.application.core.scorer.version
    cell = published.layer.models[version]["speed_boost"]
    assert cell.positives >= 10 and cell.mean[0] > 1.0
    assert server.application.layer.version == published.layer.version
    # `arbiter models` shows it: learnt, shifted up, mature
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("ARBITER_DATA_DIR", str(model_dir.parent))
    monkeypatch.setenv("ARBITER_CATALOG_PATH", str(server.settings.catalog_path))
    capsys.readouterr()
    assert cli_main(["models"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if "speed_boost" in line)
    assert f"{cell.mean[0]:+6.2f}" in row and row.endswith("mature"), row


def test_each_answer_counts_once_across_a_restart(
    server_factory: Callable[..., ServerThread],
    loaded: redis.Redis,
    redis_url: str,
    tmp_path: Path,
) -> None:
    server = server_factory(redis_url, catalog_path=thompson_catalog(tmp_path / "catalog.toml"))
    decisions = [(f"cust-{i:06d}", decide(server, f"cust-{i:06d}")) for i in range(1, 61)]
    decisions = [(c, d) for c, d in decisions if d.actions]
    for customer, decision in decisions[:10]:
        report(server, decision, customer, common_pb2.OUTCOME_ACCEPT)
    for customer, decision in decisions[10:20]:
        report(server, decision, customer, common_pb2.OUTCOME_DECLINE)
    first = learner(redis_url, window=3.0)
    server.flush_log()
    assert first.tick() == 20  # the answered ones; the others wait for their window
    # the learner stops; answers keep coming; another one starts from what was published
    for customer, decision in decisions[20:25]:
        report(server, decision, customer, common_pb2.OUTCOME_ACCEPT)
    second = learner(redis_url, window=3.0)
    assert second.tick() == 5  # the new answers, to decisions the first one had read
    time.sleep(3.0)
    assert second.tick() == len(decisions) - 25  # past their window: no response
    assert second.tick() == 0
    published = read_published(connect_sync(redis_url))
    assert published is not None
    cells = [c for cells in published.layer.models.values() for c in cells.values()]
    assert sum(c.examples for c in cells) == pytest.approx(len(decisions))
    assert sum(c.positives for c in cells) == pytest.approx(15)


def test_one_customer_s_flood_of_accepts_moves_the_layer_by_a_bounded_amount(
    server_factory: Callable[..., ServerThread],
    loaded: redis.Redis,
    redis_url: str,
    tmp_path: Path,
) -> None:
    catalog = thompson_catalog(tmp_path / "catalog.toml", repeatable=True)
    server = server_factory(redis_url, catalog_path=catalog)
    bot = "cust-000042"
    for _ in range(120):
        decision = decide(server, bot)
        report(server, decision, bot, common_pb2.OUTCOME_ACCEPT)
    the_learner = learner(redis_url, customer_positives=3, customer_examples=50)
    assert learnt(server, the_learner) == 120
    published = read_published(connect_sync(redis_url))
    assert published is not None
    cells = [c for cells in published.layer.models.values() for c in cells.values()]
    assert sum(c.positives for c in cells) == 3  # 117 accepts weigh nothing
    assert max(abs(c.mean[0]) for c in cells) < 1.0
    # the next day the customer weighs in again, as much
    assert the_learner.customer_positives == 3


def test_a_rollback_returns_to_the_last_kept_layer(
    server_factory: Callable[..., ServerThread],
    loaded: redis.Redis,
    redis_url: str,
    tmp_path: Path,
) -> None:
    server = server_factory(redis_url, catalog_path=thompson_catalog(tmp_path / "catalog.toml"))
    the_learner = learner(redis_url)

    def answered(outcome: common_pb2.Outcome.ValueType) -> None:
        for i in range(1, 41):
            decision = decide(server, f"cust-{i:06d}")
            if decision.actions:
                report(server, decision, f"cust-{i:06d}", outcome)
        server.flush_log()

    now = time.time()
    answered(common_pb2.OUTCOME_DECLINE)
    the_learner.tick(now)
    good = read_published(connect_sync(redis_url))
    the_learner.tick(now + 400)  # past the snapshot interval: the good layer is kept
    answered(common_pb2.OUTCOME_ACCEPT)  # bad data
    the_learner.tick(now + 401)
    bad = read_published(connect_sync(redis_url))
    assert good is not None and bad is not None and bad.layer.models != good.layer.models
    ask_rollback(connect_sync(redis_url))
    the_learner.tick(now + 402)
    back = read_published(connect_sync(redis_url))
    assert back is not None and back.layer.models == good.layer.models
    assert back.layer.version > bad.layer.version  # every replica takes it up
    assert connect_sync(redis_url).hget(keys.LAYER, keys.LAYER_ROLLBACK) is None


def test_serving_keeps_the_last_layer_while_the_learner_is_down(
    server_factory: Callable[..., ServerThread],
    loaded: redis.Redis,
    redis_url: str,
    tmp_path: Path,
) -> None:
    catalog = thompson_catalog(tmp_path / "catalog.toml")
    server = server_factory(redis_url, catalog_path=catalog, metrics_port=0)
    assert server.metrics_port is not None
    the_learner = learner(redis_url)
    for i in range(1, 21):
        decision = decide(server, f"cust-{i:06d}")
        if decision.actions:
            report(server, decision, f"cust-{i:06d}", common_pb2.OUTCOME_DECLINE)
    learnt(server, the_learner)
    samples = scrape(server.metrics_port)
    assert sample(samples, "arbiter_adaptive_learner_up") == 1
    version = sample(samples, "arbiter_adaptive_layer_version")
    assert version >= 1
    # the learner's last publication is old: it is down
    the_learner.tick(time.time() - 120)
    learnt_before = server.application.layer
    watch = server.running.layer_watch
    assert watch is not None
    server.run(watch.check())
    samples = scrape(server.metrics_port)
    assert sample(samples, "arbiter_adaptive_learner_up") == 0
    assert sample(samples, "arbiter_adaptive_layer_age_seconds") > 100
    assert server.application.layer.models == learnt_before.models  # still served
    assert decide(server, "cust-000001").actions


def test_a_learner_process_that_dies_is_started_again(
    loaded: redis.Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARBITER_LEARNER_SECONDS", "0.2")
    child = LearnerChild(redis_url)
    client = connect_sync(redis_url)

    def published_after(version: int, seconds: float = 20.0) -> int:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            child.check()
            raw = client.hget(keys.LAYER, keys.LAYER_VERSION)
            if raw is not None and int(raw) > version:
                return int(raw)
            time.sleep(0.1)
        raise AssertionError("the learner published nothing")

    try:
        first = published_after(0)
        pid = child.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.3)
        client.delete(keys.LEARNER_LOCK)  # its lock would lapse in 10 s
        published_after(first + 5)
        assert child.restarts == 1 and child.pid != pid
    finally:
        child.stop()


def _logged(client: redis.Redis, model: str, n: int, offer: str, *, accepted: bool) -> None:
    """``n`` decisions of ``model`` showing ``offer``, each answered, written to the logs as
    the service writes them."""
    now = time.time()
    for i in range(n):
        customer, decision = f"cust-{i + 1:06d}", f"{model}-{i}"
        shard = keys.log_shard(customer)
        entry = {
            "decision_id": decision,
            "ts": now,
            "customer_id": customer,
            "model_version": model,
            "channel": "web",
            "degraded": "",
            "candidates": [[offer, 0.1], ["other", 0.2]],
            "actions": [{"offer_id": offer, "probability": 1.0}],
        }
        client.xadd(keys.decision_log(shard), dict(log_codec.encode_decision(entry)))  # type: ignore[arg-type]
        outcome = {
            "decision_id": decision,
            "offer_id": offer,
            "customer_id": customer,
            "outcome": "accept" if accepted else "decline",
            "occurred_at": now,
        }
        client.xadd(keys.outcome_log(shard), {keys.OUTCOME_FIELD: orjson.dumps(outcome)})


def test_a_promoted_model_takes_over_the_corrections_it_did_not_learn(
    redis_client: redis.Redis, redis_url: str
) -> None:
    """The layer learnt that the old model under-rates an offer; the new model learnt a
    third of that (the retrain's hand-over says how far it moved): the new model's
    posterior starts at the rest, as sure as the old one was."""
    evidence = orjson.dumps({"offers": {"fibre": [5000, 500]}})
    redis_client.hset(keys.LAYER_EVIDENCE, mapping={"old": evidence, "new": evidence})
    the_learner = learner(redis_url)
    _logged(redis_client, "old", 200, "fibre", accepted=True)
    the_learner.tick()
    published = read_published(connect_sync(redis_url))
    assert published is not None
    old = published.layer.models["old"]["fibre"]
    assert old.mean[0] > 0.5
    move = old.mean[0] / 3
    carry = {"from": "old", "offers": {"fibre": move}}
    redis_client.hset(keys.LAYER_CARRY, "new", orjson.dumps(carry))
    _logged(redis_client, "new", 1, "fibre", accepted=False)
    the_learner.tick()
    published = read_published(connect_sync(redis_url))
    assert published is not None
    new = published.layer.models["new"]["fibre"]
    # carried (old level less the move), then one decline learnt on top
    assert new.mean[0] == pytest.approx(old.mean[0] - move, abs=0.05)
    assert new.mean[0] < old.mean[0] - move
    assert new.examples == 1


def test_a_learner_whose_server_was_killed_outright_stops(
    loaded: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    """The server's learner runs in a session of its own (a Ctrl-C to the terminal is the
    server's to pass on), so a SIGKILL of the server cannot reach it: it stops itself."""
    pid_file = tmp_path / "learner.pid"
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from engine.service.learner_process import LearnerChild\n"
            "child = LearnerChild(sys.argv[1])\n"
            "child.check()\n"
            "open(sys.argv[2], 'w').write(str(child.pid))\n"
            "time.sleep(600)\n",
            redis_url,
            str(pid_file),
        ],
        env={**os.environ, "ARBITER_LEARNER_SECONDS": "0.2"},
    )
    try:
        deadline = time.monotonic() + 30
        while not (pid_file.exists() and pid_file.read_text()):
            assert time.monotonic() < deadline, "the learner did not start"
            time.sleep(0.05)
        learner = int(pid_file.read_text())
        parent.kill()  # SIGKILL: nothing of the server's runs after it
        parent.wait()
        deadline = time.monotonic() + 20
        while _alive(learner):
            assert time.monotonic() < deadline, "the orphaned learner learns on"
            time.sleep(0.1)
    finally:
        parent.kill()
        parent.wait()


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, exited but not yet reaped by init, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
