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
    # LightGBM: trees, leaves, learning rate, minimum rows per leaf, and the seed of the
    # random holdout (simulated logs; logs hold out their latest decisions instead).
    num_trees: int = 150
    num_leaves: int = 31
    learning_rate: float = 0.05
    min_data_in_leaf: int = 40
    training_seed: int = 3
    # Share of the rows held out to evaluate and compare models.
    holdout: float = 0.2
    # A new model is promoted only when its holdout AUC beats the promoted one's by this.
    promote_margin: float = 0.001
    # ...measured on a holdout with at least this many positive outcomes (a small holdout's
    # AUC is too noisy to replace a model on).
    min_holdout_positives: int = 200
    # From logs, also: the new policy's off-policy estimate (SNIPS, 95%) must be known to
    # within this share of its value; a policy far from the logging one cannot be told.
    promote_max_ope_halfwidth: float = 0.1
    # Outcomes count towards a decision when reported within this many hours of it.
    attribution_hours: float = 72.0
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
