"""The trainer's settings (`arbiter train`, `arbiter simulate`, the demo bootstrap), read
from ``ARBITER_*`` environment variables once, at start-up, and passed down."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from engine.settings import CommonSettings


class TrainerSettings(CommonSettings):
    demo_customers: int = 50_000
    world_seed: int = 7
    train_rows: int = 100_000
    simulation_seed: int = 0  # 0: a new seed every training run
    # LightGBM: trees, leaves, learning rate, minimum rows per leaf, the L2 penalty on a
    # leaf's value, and the seed of the random holdout (simulated logs; logs hold out their
    # latest decisions instead). Many small, shrunk trees: at a response rate of a few per
    # cent a leaf of 40 rows holds two positives, and the penalty pulls such a leaf's value
    # towards zero (docs/simulation.md: the batch model's greedy choice +0.41 points of the
    # oracle over 150 trees of 31 leaves without it, 5 worlds).
    num_trees: int = 300
    num_leaves: int = 15
    learning_rate: float = 0.05
    min_data_in_leaf: int = 40
    lambda_l2: float = 30.0
    training_seed: int = 3
    # Share of the rows held out to evaluate and compare models.
    holdout: float = 0.2
    # Simulated logs (the demo bootstrap): a new model is promoted only when its holdout
    # AUC beats the promoted one's by this, on a holdout with at least this many positive
    # outcomes (a small holdout's AUC is too noisy to replace a model on).
    promote_margin: float = 0.001
    min_holdout_positives: int = 200
    # From the logs (training/retrain.py): promoted when the paired lower bound of its value
    # lift over the champion is above zero, judged on at least this many answered decisions
    # made since the champion's data ended; and its guardrails hold: AUC at most this much
    # below the champion's, calibration error at most this much above.
    min_holdout_decisions: int = 500
    # "value": only that bound. "value-or-prediction": also when the challenger predicts the
    # champion's own decisions better (paired log loss, lower bound above zero) and its
    # value lift is not shown negative (docs/simulation.md measures both).
    promotion_rule: Literal["value", "value-or-prediction"] = "value-or-prediction"
    guard_auc_drop: float = 0.01
    guard_calibration: float = 0.02
    # Logged decisions older than this are no longer trained on (the base rows always are).
    training_window_days: float = 30.0
    # Each offer's model is watched over the decisions of this many days (training/monitor.py).
    monitor_days: float = 7.0
    # "local", or "dask": LightGBM's distributed learner on a Dask cluster (the `dask`
    # extra); dask_scheduler is its address, or unset for a local cluster.
    training_engine: Literal["local", "dask"] = "local"
    dask_scheduler: str | None = None
    # Compile a promoted model's trees to machine code for this CPU (lleaves: 10-60 s
    # once, then scoring is 4-6x faster); serving falls back to LightGBM without it.
    compile_trees: bool = True
    # Where `arbiter export-logs` writes the logs as Parquet (and `train --source export`
    # reads them); default <data_dir>/exported-logs.
    export_dir: Path | None = None

    @property
    def export_path(self) -> Path:
        return self.export_dir or self.data_dir / "exported-logs"
