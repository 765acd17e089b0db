"""The demo world and training: deterministic, plausible, and a model that learns."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.settings import Definitions
from training.metrics import auc, log_loss
from training.settings import TrainerSettings
from training.synthetic_logs import simulate_logs
from training.train import train
from training.world import World, generate


def test_world_is_deterministic_for_a_seed() -> None:
    a, b, c = generate(500, seed=1), generate(500, seed=1), generate(500, seed=2)
    assert a.profile(17) == b.profile(17)
    assert a.profile(17) != c.profile(17)
    assert a.customer_id(0) == "cust-000001"
    assert generate(50_000, seed=7).customer_id(49_999) == "cust-050000"


def test_world_features_are_plausible(world: World, definitions: Definitions) -> None:
    f = world.features
    assert set(f) == {feat.name for feat in definitions.schema.batch}
    assert np.all((f["churn_risk"] > 0) & (f["churn_risk"] < 1))
    assert np.all(f["data_allowance_gb"] >= 3)
    assert 0.2 < f["has_fibre"].mean() < 0.5


def test_metrics() -> None:
    labels = np.array([0, 0, 1, 1])
    assert auc(labels, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert auc(labels, np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    assert auc(labels, np.array([0.5, 0.5, 0.5, 0.5])) == 0.5
    assert log_loss(labels, np.array([0.5] * 4)) == np.log(2)


def test_trained_model_learns_the_hidden_response(world: World, definitions: Definitions) -> None:
    logs = simulate_logs(
        world, definitions.schema, definitions.catalog, definitions.stage_rules, rows=15_000, seed=5
    )
    assert (
        logs.rows > 12_000
    )  # rows with no eligible offer (e.g. SMS without opt-in) are not logged
    assert 0.02 < logs.reward.mean() < 0.3
    assert np.all(logs.probability > 0) and np.all(logs.probability <= 1)

    model = train(logs, definitions.schema, definitions.catalog, TrainerSettings(num_trees=40))

    assert model.metrics["auc"] > 0.65
    assert model.metrics["auc"] <= model.metrics["oracle_auc"] + 0.03
    assert model.metrics["log_loss"] < log_loss(logs.reward, np.full(logs.rows, logs.reward.mean()))


@given(
    st.lists(
        st.tuples(st.booleans(), st.integers(0, 6)),  # few distinct scores: many ties
        min_size=2,
        max_size=60,
    )
)
def test_auc_counts_every_positive_negative_pair(rows: list[tuple[bool, int]]) -> None:
    labels = np.array([y for y, _ in rows])
    scores = np.array([float(s) for _, s in rows])
    pos, neg = scores[labels], scores[~labels]
    if not len(pos) or not len(neg):
        assert np.isnan(auc(labels, scores))
        return
    pairs = [(p > n) + 0.5 * (p == n) for p in pos for n in neg]
    assert auc(labels, scores) == pytest.approx(sum(pairs) / len(pairs))
