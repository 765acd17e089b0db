"""The scheduled retrain: labels that mature by channel, a training set that keeps its data
and counts a decision once, promotion on a paired bound that refuses a model trained on
shuffled labels, and one promotion at a time."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import redis

from arbiter.v1 import common_pb2, decision_pb2
from common.errors import ConfigurationError
from common.reward import RewardWindows
from engine.adapters import artifact
from engine.core.arbitration import GREEDY
from engine.core.catalog import Catalog
from engine.core.model_input import ServedInputs
from engine.settings import Definitions
from feature_store.log_reader import read_decisions, read_logs
from tests.conftest import ServerThread, accept, report
from training import dataset, retrain, simulation
from training.evaluation import Context
from training.job import TrainingOutcome, save_and_promote
from training.logs import Outcomes
from training.promotion import deployed, dr_values
from training.simulation.traffic import Simulation

MINUTE = 60.0


def decision(channel: str, ts: float = 1_000_000.0) -> dict[str, object]:
    return {"decision_id": "d1", "ts": ts, "channel": channel}


def answer(outcome: str, at: float, key: str) -> dict[str, object]:
    return {
        "decision_id": "d1",
        "offer_id": "a",
        "outcome": outcome,
        "occurred_at": at,
        "idempotency_key": key,
    }


def test_a_row_matures_when_answered_or_when_its_channels_window_has_passed() -> None:
    windows = RewardWindows.of({}, attribution_hours=72)
    t = 1_000_000.0
    silent = Outcomes.indexed([])
    # No answer: web waits 30 minutes, the call center an hour, email three days.
    assert silent.label(decision("web"), "a", windows, t + 29 * MINUTE) == (None, False)
    assert silent.label(decision("web"), "a", windows, t + 30 * MINUTE) == (0, False)
    assert silent.label(decision("call_center"), "a", windows, t + 59 * MINUTE) == (None, False)
    assert silent.label(decision("call_center"), "a", windows, t + 60 * MINUTE) == (0, False)
    assert silent.label(decision("email"), "a", windows, t + 2 * 86400) == (None, False)
    assert silent.label(decision("email"), "a", windows, t + 3 * 86400) == (0, False)
    # An answer matures it at once, whatever the channel.
    accepted = Outcomes.indexed([answer("accept", t + 5, "k1")])
    assert accepted.label(decision("email"), "a", windows, t + 10) == (1, False)
    declined = Outcomes.indexed([answer("decline", t + 5, "k1")])
    assert declined.label(decision("email"), "a", windows, t + 10) == (0, False)
    # A click is no answer; an impression neither.
    clicked = Outcomes.indexed([answer("click", t + 5, "k1"), answer("impression", t, "k2")])
    assert clicked.label(decision("web"), "a", windows, t + 10) == (None, False)
    # A decline, then an accept: the accept counts.
    changed = Outcomes.indexed([answer("decline", t + 5, "k1"), answer("accept", t + 9, "k2")])
    assert changed.label(decision("web"), "a", windows, t + 10) == (1, False)
    # Late (after the window, inside the attribution): relabelled where it belongs, said.
    late = Outcomes.indexed([answer("accept", t + 45 * MINUTE, "k1")])
    assert late.label(decision("web"), "a", windows, t + 40 * MINUTE) == (0, False)
    assert late.label(decision("web"), "a", windows, t + 50 * MINUTE) == (1, True)
    # After the attribution window: not the decision's doing.
    stale = Outcomes.indexed([answer("accept", t + 73 * 3600, "k1")])
    assert stale.label(decision("web"), "a", windows, t + 80 * 3600) == (0, False)


def test_reward_windows_are_settings_and_unknown_channels_are_refused() -> None:
    windows = RewardWindows.of({"web": 5, "sms": 600}, attribution_hours=1)
    assert windows.wait("web") == 300 and windows.wait("sms") == 36_000
    assert windows.wait("mobile_app") == 1800  # the default
    assert windows.attribution == 3 * 86400  # at least the longest window (email's)
    with pytest.raises(ValueError, match="reward_window_minutes: unknown channel fax"):
        RewardWindows.of({"fax": 5}, attribution_hours=1)


def test_a_decision_read_twice_counts_once(
    server_factory: Callable[..., ServerThread],
    loaded: redis.Redis,
    redis_url: str,
    definitions: Definitions,
) -> None:
    # Budgets a loaded machine cannot miss: no decision is degraded (left out of training).
    server = server_factory(redis_url, feature_timeout_ms=2000, reserve_timeout_ms=2000)
    for n in range(1, 21):
        response = server.decisions.Decide(
            decision_pb2.DecideRequest(customer_id=f"cust-{n:06d}", channel=common_pb2.CHANNEL_WEB),
            timeout=5,
        )
        if response.actions and n % 2:
            accept(server, response, f"cust-{n:06d}")
    server.flush_log()
    decisions, outcomes = read_logs(loaded)
    vocabulary = server.application.core.scorer.vocabulary
    assert vocabulary is not None

    def build(*sources: list[dict[str, object]]) -> dataset.TrainingSet:
        return dataset.build(
            definitions.schema, definitions.catalog, vocabulary, RewardWindows.of({}, 1.0),
            now=time.time() + 86400 * 4, base=None, decisions=sources, outcomes=outcomes,
        )  # fmt: skip

    once, twice = build(decisions), build(decisions, decisions)

    assert once.report.used == twice.report.used == 20 and once.report.duplicates == 0
    assert twice.report.duplicates == 20 and twice.report.decisions == 40
    np.testing.assert_array_equal(once.matrix, twice.matrix)
    assert int(once.reward.sum()) == 10


def test_base_rows_are_kept_and_read_back_as_served(
    definitions: Definitions, tmp_path: Path
) -> None:
    from training.synthetic_logs import simulate_logs
    from training.world import generate

    logs = simulate_logs(
        generate(300, 7), definitions.schema, definitions.catalog, definitions.stage_rules,
        rows=200,
    )  # fmt: skip
    dataset.save_base(tmp_path, "first", logs)
    back = dataset.load_base(tmp_path, "first")

    assert back is not None and back.rows == logs.rows
    assert back.offer_ids == logs.offer_ids
    np.testing.assert_array_equal(back.reward, logs.reward)
    for a, b in zip(back.served, logs.served, strict=True):
        np.testing.assert_array_equal(a.features, b.features)
        assert (a.channel, a.stage, a.last_category) == (b.channel, b.stage, b.last_category)
        assert dict(a.topic_counts) == dict(b.topic_counts)
    assert dataset.load_base(tmp_path, "missing") is None


def test_the_value_of_a_policy_is_its_doubly_robust_estimate(definitions: Definitions) -> None:
    catalog: Catalog = definitions.catalog
    a, b = catalog.offers[0], catalog.offers[1]
    served = ServedInputs(np.zeros(len(definitions.schema.names)), "web", "consideration")
    logged = Context(served, "home_hero", (a.offer_id, b.offer_id), b.offer_id, 0.25, 1.0)
    fitted = [np.array([0.2, 0.1])]
    # A greedy policy that puts b first: the model's value of b, corrected by its error.
    picks_b = deployed([logged], [np.array([0.0, 1.0])], catalog, GREEDY)
    value = dr_values([logged], picks_b, fitted, catalog)[0]
    expected = 0.1 * b.value + 1 / 0.25 * (1.0 - 0.1) * b.value
    assert value == pytest.approx(expected)
    # One that puts a first never took the logged action: the model's value of a alone.
    picks_a = deployed([logged], [np.array([1.0, 0.0])], catalog, GREEDY)
    assert dr_values([logged], picks_a, fitted, catalog)[0] == pytest.approx(0.2 * a.value)


def test_a_model_learnt_from_shuffled_labels_is_refused_every_time(tmp_path: Path) -> None:
    with simulation.stack(
        tmp_path / "sim", world_size=1500, first_rows=4000, min_holdout_decisions=100
    ) as w:
        Simulation(w.server, w.client, w.world, w.trainer, seed=3).run_day(1, 700)
        time.sleep(0.3)  # the unanswered decisions' window passes
        champion = artifact.current_version(w.trainer.model_dir)

        refusals = []
        for seed in (1, 2, 3):
            settings = w.trainer.model_copy(update={"training_seed": seed})
            refused, _ = retrain.train_from_logs(settings, w.client, shuffled_labels=True)
            refusals.append(refused)
            assert artifact.current_version(w.trainer.model_dir) == champion
        real, report = retrain.train_from_logs(w.trainer, w.client)
        first = artifact.load(w.trainer.model_dir, champion)

    # Every row the first model learnt from is learnt from again, with the logs.
    assert report.used >= 650 and report.base_rows == first.training["rows"] > 3000
    # Learnt from the real answers, the model ranks them: the guard that refuses the
    # shuffled ones lets it through.
    assert real.model.metrics["auc_low"] > 0.5, real.why
    for refused in refusals:
        assert not refused.promoted
        # Its ranking is what gives it away: no better than chance beyond its error, or
        # (where chance flatters it) far below the champion's.
        reasons = refused.why.partition("refused: ")[2]
        assert "has not learnt to rank" in reasons or "below the champion's" in reasons, reasons
        assert refused.model.training["shuffled_labels"] is True


def test_one_promotion_at_a_time(redis_client: redis.Redis, tmp_path: Path) -> None:
    with (
        retrain.trainer_lock(redis_client),
        pytest.raises(retrain.TrainerBusy, match="another trainer is running"),
        retrain.trainer_lock(redis_client),
    ):
        pass
    with retrain.trainer_lock(redis_client):  # released: it can be taken again
        assert redis_client.ttl(retrain.LOCK_KEY) > 0
    assert redis_client.get(retrain.LOCK_KEY) is None


def test_a_champion_that_changed_while_training_is_not_replaced(
    model_dir: Path, tmp_path: Path
) -> None:
    from training.settings import TrainerSettings

    settings = TrainerSettings(data_dir=tmp_path, compile_trees=False)
    model = artifact.load(model_dir)
    artifact.save(settings.model_dir, model)  # promoted: the champion now

    outcome = save_and_promote(
        settings, TrainingOutcome(model, True, "better"), unless_changed_from="another-version"
    )

    assert not outcome.promoted
    assert f"not promoted: {model.version} was promoted while this model" in outcome.why


def test_the_schedule_goes_on_after_a_run_that_could_not_train() -> None:
    calls: list[float] = []

    def run() -> None:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise ConfigurationError("not enough labelled decisions to train")

    retrain.every(0.05, run, runs=3)

    assert len(calls) == 3
    assert all(b - a >= 0.045 for a, b in itertools.pairwise(calls))


def test_nothing_new_to_judge_on_is_said_and_changes_nothing(
    server: ServerThread, loaded: redis.Redis, model_dir: Path, tmp_path: Path
) -> None:
    from training.settings import TrainerSettings

    settings = TrainerSettings(
        data_dir=tmp_path, reward_window_minutes={"web": 0.001}, compile_trees=False
    )
    champion = artifact.load(model_dir)
    artifact.save(settings.model_dir, champion)
    for n in range(1, 151):
        response = server.decisions.Decide(
            decision_pb2.DecideRequest(customer_id=f"cust-{n:06d}", channel=common_pb2.CHANNEL_WEB),
            timeout=5,
        )
        if response.actions and n % 3 == 0:
            accept(server, response, f"cust-{n:06d}")
    server.flush_log()
    time.sleep(0.2)
    assert len(read_decisions(loaded)) == 150

    with pytest.raises(ConfigurationError, match=r"150 answered decisions since .*500 needed"):
        retrain.train_from_logs(settings, loaded)

    assert artifact.current_version(settings.model_dir) == champion.version


def test_a_greedy_log_cannot_tell_a_new_models_value(
    server_factory: Callable[..., ServerThread],
    loaded: redis.Redis,
    redis_url: str,
    model_dir: Path,
    tmp_path: Path,
) -> None:
    from training.settings import TrainerSettings

    server = server_factory(redis_url, feature_timeout_ms=2000, reserve_timeout_ms=2000)
    settings = TrainerSettings(
        data_dir=tmp_path,
        catalog_path=server.settings.catalog_path,  # greedy, as the server decided
        min_holdout_decisions=300,
        num_trees=30,
        compile_trees=False,
    )
    artifact.save(settings.model_dir, artifact.load(model_dir))  # the champion that served
    for n in range(1, 601):
        cid = f"cust-{n:06d}"
        response = server.decisions.Decide(
            decision_pb2.DecideRequest(customer_id=cid, channel=common_pb2.CHANNEL_WEB),
            timeout=5,
        )
        answer = (common_pb2.OUTCOME_ACCEPT, common_pb2.OUTCOME_DECLINE)[n % 2]
        report(server, response, cid, answer)
    server.flush_log()

    outcome, _ = retrain.train_from_logs(settings, loaded)

    # The catalog does not explore: every candidate but the champion's best had no
    # chance, so where the new model would choose otherwise only its own belief speaks.
    assert outcome.lift is not None and outcome.lift.unsupported > 0.1
    assert "its value cannot be told from these logs" in outcome.why
    assert "explores too little" in outcome.why
