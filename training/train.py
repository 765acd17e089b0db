"""Training: logged decisions and outcomes -> a LightGBM model artifact.

The training matrix is built row by row with the serving code (engine.core.model_input), from
the customer features as they were served, so there is no training/serving skew.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import lightgbm as lgb
import numpy as np

from engine.adapters.artifact import ModelArtifact, new_version
from engine.core.catalog import Catalog
from engine.core.model_input import CATEGORICAL, Vocabulary, build_matrix, model_feature_names
from feature_store.schema import FeatureSchema
from training.metrics import auc, log_loss
from training.rows import TrainingRows


@dataclass(frozen=True)
class TrainingConfig:
    num_trees: int = 150
    num_leaves: int = 31
    learning_rate: float = 0.05
    min_data_in_leaf: int = 40
    holdout: float = 0.2  # share of rows held out for evaluation
    holdout_by_time: bool = False  # hold out the latest rows (logs) instead of random ones
    engine: str = "local"  # "local", or "dask": LightGBM's distributed learner on Dask
    dask_scheduler: str | None = None  # a Dask scheduler address; None: a local cluster
    seed: int = 3


def holdout_mask(rows: int, config: TrainingConfig) -> np.ndarray:
    """The evaluation rows: the same for every model trained or evaluated with ``config``.
    By time: the latest ``holdout`` share (rows are in log order)."""
    if config.holdout_by_time:
        return np.arange(rows) >= rows - int(rows * config.holdout)
    return np.random.default_rng(config.seed).random(rows) < config.holdout


def training_matrix(
    logs: TrainingRows,
    schema: FeatureSchema,
    catalog: Catalog,
    vocabulary: Vocabulary,
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """Model input rows for ``rows`` (indices; default all) of the logs."""
    indices = np.arange(logs.rows) if rows is None else rows
    matrix = np.empty((indices.shape[0], len(model_feature_names(schema))))
    for out, r in enumerate(indices.tolist()):
        matrix[out] = build_matrix(
            logs.features[r],
            [catalog.by_id[logs.offer_ids[r]]],
            logs.channels[r],
            logs.stages[r],
            logs.last_categories[r],
            vocabulary,
            logs.topic_counts[r],
        )[0]
    return matrix


def train(
    logs: TrainingRows,
    schema: FeatureSchema,
    catalog: Catalog,
    config: TrainingConfig = TrainingConfig(),
    *,
    source: str = "simulated",
) -> ModelArtifact:
    """Trains on a random split of ``logs`` and returns an unsaved artifact with metrics."""
    vocabulary = Vocabulary.from_catalog(catalog)
    names = model_feature_names(schema)
    matrix = training_matrix(logs, schema, catalog, vocabulary)
    labels = logs.reward.astype(np.float64)
    test = holdout_mask(logs.rows, config)
    params: dict[str, Any] = {
        "objective": "binary",
        "num_leaves": config.num_leaves,
        "learning_rate": config.learning_rate,
        "min_data_in_leaf": config.min_data_in_leaf,
        "feature_fraction": 0.9,
        "bagging_fraction": 0.9,
        "bagging_freq": 1,
        "seed": config.seed,
        "deterministic": True,
        "num_threads": 2,
        "verbosity": -1,
    }
    if config.engine == "dask":
        from training.distributed import train_on_dask

        booster = train_on_dask(
            matrix[~test],
            labels[~test],
            names,
            CATEGORICAL,
            params,
            config.num_trees,
            scheduler=config.dask_scheduler,
        )
    else:
        train_set = lgb.Dataset(
            matrix[~test],
            labels[~test],
            feature_name=list(names),
            categorical_feature=list(CATEGORICAL),
            free_raw_data=True,
        )
        booster = lgb.train(params, train_set, num_boost_round=config.num_trees)
    predicted = np.asarray(booster.predict(matrix[test], num_threads=2))
    metrics = {
        "auc": auc(labels[test], predicted),
        "log_loss": log_loss(labels[test], predicted),
        "base_rate": float(labels.mean()),
        "train_rows": int((~test).sum()),
        "test_rows": int(test.sum()),
        "holdout_positives": int(labels[test].sum()),
    }
    if logs.true_propensity is not None:  # the simulation knows the best possible scores
        truth = logs.true_propensity[test]
        metrics["oracle_auc"] = auc(labels[test], truth)
        metrics["oracle_log_loss"] = log_loss(labels[test], truth)
    model_text = booster.model_to_string()
    now = datetime.now(UTC)
    return ModelArtifact(
        version=new_version(model_text, now),
        model_text=model_text,
        features=names,
        categorical=CATEGORICAL,
        vocabulary=vocabulary,
        schema_fingerprint=schema.fingerprint,
        created_at=now.isoformat(timespec="milliseconds"),
        metrics=metrics,
        training={
            "source": source,
            "rows": logs.rows,
            "num_trees": config.num_trees,
            "holdout": "latest" if config.holdout_by_time else "random",
            "engine": config.engine,
        },
    )


def evaluate(
    model: ModelArtifact,
    logs: TrainingRows,
    schema: FeatureSchema,
    catalog: Catalog,
    config: TrainingConfig = TrainingConfig(),
) -> dict[str, float]:
    """AUC and log loss of ``model`` on the holdout rows of ``logs`` (as ``train`` splits
    them), so a challenger and the champion are compared on the same rows."""
    rows = np.flatnonzero(holdout_mask(logs.rows, config))
    matrix = training_matrix(logs, schema, catalog, model.vocabulary, rows)
    predicted = np.asarray(lgb.Booster(model_str=model.model_text).predict(matrix))
    labels = logs.reward[rows]
    return {"auc": auc(labels, predicted), "log_loss": log_loss(labels, predicted)}
