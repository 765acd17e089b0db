"""Warm start or not: a retrain continued from the champion's trees (LightGBM's
``init_model``) against a fresh fit on the same accumulated rows, judged on held-out
simulated rows against the hidden truth.

The champion learns from 30,000 simulated rows; each challenger from those and 5,000,
15,000 or 30,000 new ones, either fresh (150 trees, as `arbiter train`) or warm (50 or
150 more trees on top of the champion's). Printed: AUC and log loss on 40,000 held-out
rows, and the mean distance of the predictions to the true probabilities.

    .venv/bin/python -m benchmarks.bench_warm_start     (about a minute)
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")

import lightgbm as lgb
import numpy as np

from engine.core.model_input import CATEGORICAL, Vocabulary, model_feature_names
from engine.settings import load_definitions
from training.metrics import auc, log_loss
from training.settings import TrainerSettings
from training.synthetic_logs import simulate_logs
from training.train import training_matrix
from training.world import generate

PARAMS = {
    "objective": "binary",
    "num_leaves": 31,
    "learning_rate": 0.05,
    "min_data_in_leaf": 40,
    "feature_fraction": 0.9,
    "bagging_fraction": 0.9,
    "bagging_freq": 1,
    "seed": 3,
    "deterministic": True,
    "num_threads": 2,
    "verbosity": -1,
}


def main() -> None:
    settings = TrainerSettings()
    definitions = load_definitions(settings)
    world = generate(50_000, settings.world_seed)
    vocabulary = Vocabulary.from_catalog(definitions.catalog)
    names = list(model_feature_names(definitions.schema))

    def rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        logs = simulate_logs(
            world, definitions.schema, definitions.catalog, definitions.stage_rules,
            rows=n, seed=seed,
        )  # fmt: skip
        matrix = training_matrix(logs, definitions.schema, definitions.catalog, vocabulary)
        assert logs.true_propensity is not None
        return matrix, logs.reward.astype(np.float64), logs.true_propensity

    def fit(
        x: np.ndarray, y: np.ndarray, rounds: int, init: lgb.Booster | None = None
    ) -> lgb.Booster:
        data = lgb.Dataset(x, y, feature_name=names, categorical_feature=list(CATEGORICAL))
        return lgb.train(PARAMS, data, num_boost_round=rounds, init_model=init)

    def line(label: str, model: lgb.Booster) -> str:
        p = np.asarray(model.predict(test_x))
        return (
            f"{label:28s} AUC {auc(test_y, p):.4f}  log loss {log_loss(test_y, p):.4f}"
            f"  mean |p - truth| {float(np.mean(np.abs(p - truth))):.4f}"
        )

    base_x, base_y, _ = rows(30_000, 1)
    test_x, test_y, truth = rows(40_000, 99)
    champion = fit(base_x, base_y, 150)
    print(line("champion (30,000 rows)", champion))
    for new in (5_000, 15_000, 30_000):
        new_x, new_y, _ = rows(new, 100 + new)
        x, y = np.vstack([base_x, new_x]), np.concatenate([base_y, new_y])
        print(line(f"+{new:,}: fresh, 150 trees", fit(x, y, 150)))
        print(line(f"+{new:,}: warm, +50 trees", fit(x, y, 50, champion)))
        print(line(f"+{new:,}: warm, +150 trees", fit(x, y, 150, champion)))


if __name__ == "__main__":
    main()
