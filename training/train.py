"""Training: logged decisions and outcomes -> a LightGBM model artifact.

The training matrix is built row by row with the serving code
(engine/core/model_input.py) from the inputs as they were served, so there is no
training/serving skew. The holdout is a random share of simulated logs, or the latest
decisions of real logs.
"""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import lightgbm as lgb
import numpy as np

from engine.adapters.artifact import ModelArtifact, new_version
from engine.core.catalog import Catalog
from engine.core.model_input import CATEGORICAL, Vocabulary, build_matrix, model_feature_names
from engine.core.schema import FeatureSchema
from training.metrics import auc, calibration_error, log_loss
from training.rows import TrainingRows
from training.settings import TrainerSettings

# Held-out rows kept with the artifact: a compiled form of its trees must agree on them.
CHECK_ROWS = 256


def holdout_mask(rows: int, settings: TrainerSettings, *, by_time: bool) -> np.ndarray:
    """The evaluation rows: the same for every model trained or evaluated with the same
    settings. By time: the latest ``holdout`` share (rows are in log order); else a
    random share drawn with ``training_seed``."""
    if by_time:
        return np.arange(rows) >= rows - int(rows * settings.holdout)
    return np.random.default_rng(settings.training_seed).random(rows) < settings.holdout


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
        offer = catalog.by_id[logs.offer_ids[r]]
        matrix[out] = build_matrix(logs.served[r], [offer], vocabulary)[0]
    return matrix


def train(
    logs: TrainingRows,
    schema: FeatureSchema,
    catalog: Catalog,
    settings: TrainerSettings,
    *,
    by_time: bool = False,
    source: str = "simulated",
    previous: Vocabulary | None = None,
) -> ModelArtifact:
    """Trains on ``logs`` less the holdout (``holdout_mask``: the latest rows when
    ``by_time``, else a random share) and returns an unsaved artifact with metrics. The
    vocabulary extends ``previous`` (the promoted model's): no index moves."""
    vocabulary = Vocabulary.from_catalog(catalog, previous)
    matrix = training_matrix(logs, schema, catalog, vocabulary)
    test = holdout_mask(logs.rows, settings, by_time=by_time)
    model = fit(
        matrix,
        logs.reward,
        test,
        model_feature_names(schema),
        vocabulary,
        schema,
        settings,
        true_propensity=logs.true_propensity,
    )
    return replace(
        model,
        training={
            **model.training,
            "source": source,
            "holdout": "latest" if by_time else "random",
        },
    )


def fit(
    matrix: np.ndarray,
    reward: np.ndarray,
    test: np.ndarray,
    names: tuple[str, ...],
    vocabulary: Vocabulary,
    schema: FeatureSchema,
    settings: TrainerSettings,
    *,
    true_propensity: np.ndarray | None = None,
) -> ModelArtifact:
    """LightGBM on the rows of ``matrix`` outside ``test`` (a boolean mask), evaluated on
    those inside it (all rows, and no metrics, when ``test`` is empty); an unsaved
    artifact."""
    labels = reward.astype(np.float64)
    params: dict[str, Any] = {
        "objective": "binary",
        "num_leaves": settings.num_leaves,
        "learning_rate": settings.learning_rate,
        "min_data_in_leaf": settings.min_data_in_leaf,
        "lambda_l2": settings.lambda_l2,
        "feature_fraction": 0.9,
        "bagging_fraction": 0.9,
        "bagging_freq": 1,
        "seed": settings.training_seed,
        "deterministic": True,
        "num_threads": 2,
        "verbosity": -1,
    }
    if settings.training_engine == "dask":
        from training.distributed import train_on_dask

        booster = train_on_dask(
            matrix[~test],
            labels[~test],
            names,
            CATEGORICAL,
            params,
            settings.num_trees,
            scheduler=settings.dask_scheduler,
        )
    else:
        train_set = lgb.Dataset(
            matrix[~test],
            labels[~test],
            feature_name=list(names),
            categorical_feature=list(CATEGORICAL),
            free_raw_data=True,
        )
        booster = lgb.train(params, train_set, num_boost_round=settings.num_trees)
    metrics: dict[str, float] = {
        "base_rate": float(labels.mean()),
        "train_rows": int((~test).sum()),
        "test_rows": int(test.sum()),
        "holdout_positives": int(labels[test].sum()),
    }
    check = matrix[test] if test.any() else matrix
    if test.any():
        predicted = np.asarray(booster.predict(matrix[test], num_threads=2))
        metrics["auc"] = auc(labels[test], predicted)
        metrics["log_loss"] = log_loss(labels[test], predicted)
        metrics["calibration_error"] = calibration_error(labels[test], predicted)
        if true_propensity is not None:  # the simulation knows the best possible scores
            truth = true_propensity[test]
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
            "rows": int(labels.shape[0]),
            "num_trees": settings.num_trees,
            "engine": settings.training_engine,
            "offers": offer_evidence(matrix[:, len(schema.names)], labels, vocabulary),
            "feature_stats": feature_stats(matrix[~test, : len(schema.names)], schema.names),
        },
        check_rows=np.ascontiguousarray(check[:CHECK_ROWS], dtype=np.float64),
    )


def feature_stats(customer: np.ndarray, names: tuple[str, ...]) -> dict[str, list[float]]:
    """{feature: [mean, sd]} of the customer features it was trained on: how the online
    layer standardises its context features (engine/core/adaptive.py)."""
    with np.errstate(all="ignore"):
        mean = np.nanmean(customer, axis=0) if customer.size else np.zeros(len(names))
        sd = np.nanstd(customer, axis=0) if customer.size else np.ones(len(names))
    return {
        n: [round(float(m), 6), round(float(s), 6)]
        for n, m, s in zip(names, mean.tolist(), sd.tolist(), strict=True)
        if math.isfinite(m) and math.isfinite(s) and s > 0
    }


def offer_evidence(
    column: np.ndarray, labels: np.ndarray, vocabulary: Vocabulary
) -> dict[str, list[int]]:
    """{offer: [rows, positives]} from the offer-id column (vocabulary indices): what the
    online layer's prior for each offer starts from (engine/core/adaptive.py)."""
    known = ~np.isnan(column)
    index = column[known].astype(np.int64)
    size = max(vocabulary.offer_ids.values(), default=-1) + 1
    rows = np.bincount(index, minlength=size)
    positives = np.bincount(index, weights=labels[known], minlength=size)
    return {
        o: [int(rows[i]), int(positives[i])]
        for o, i in vocabulary.offer_ids.items()
        if i < size and rows[i] > 0
    }


def evaluate(
    model: ModelArtifact,
    logs: TrainingRows,
    schema: FeatureSchema,
    catalog: Catalog,
    settings: TrainerSettings,
    *,
    by_time: bool = False,
) -> dict[str, float]:
    """AUC and log loss of ``model`` on the holdout rows of ``logs`` (as ``train`` splits
    them), so a challenger and the champion are compared on the same rows."""
    rows = np.flatnonzero(holdout_mask(logs.rows, settings, by_time=by_time))
    matrix = training_matrix(logs, schema, catalog, model.vocabulary, rows)
    predicted = np.asarray(lgb.Booster(model_str=model.model_text).predict(matrix))
    labels = logs.reward[rows]
    return {
        "auc": auc(labels, predicted),
        "log_loss": log_loss(labels, predicted),
        "calibration_error": calibration_error(labels, predicted),
    }
