"""Training on a local Dask cluster gives a model that serving loads like any other.

Runs in the `dask` extra's environment (`make test` builds it); the main test run leaves
this folder out when dask is not installed (see tests/conftest.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from engine.adapters import artifact
from engine.service.reloader import load_scorer
from engine.settings import Definitions
from training.settings import TrainerSettings
from training.synthetic_logs import simulate_logs
from training.train import train
from training.world import World


def test_dask_training_serves_like_local_training(
    world: World, definitions: Definitions, tmp_path: Path
) -> None:
    logs = simulate_logs(
        world, definitions.schema, definitions.catalog, definitions.stage_rules, rows=20_000, seed=8
    )
    local = train(logs, definitions.schema, definitions.catalog, TrainerSettings(num_trees=40))
    on_dask = train(
        logs,
        definitions.schema,
        definitions.catalog,
        TrainerSettings(num_trees=40, training_engine="dask"),
    )

    assert on_dask.training["engine"] == "dask"
    assert on_dask.features == local.features
    assert on_dask.metrics["auc"] > 0.65
    assert abs(on_dask.metrics["auc"] - local.metrics["auc"]) < 0.03
    artifact.save(tmp_path, dataclasses.replace(on_dask, version="v-dask"))
    scorer = load_scorer(tmp_path, definitions.schema)
    assert scorer.version == "v-dask"
    p = scorer.predict(np.zeros((3, len(on_dask.features))))
    assert np.all((p > 0) & (p < 1))
