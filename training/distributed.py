"""Training on a Dask cluster with LightGBM's own distributed learner (``lightgbm.dask``).

For logs that outgrow one machine: the rows are split into Dask chunks over the workers,
and LightGBM trains one model across them (data-parallel), returning an ordinary booster,
so the artifact, its checks and serving are the same as for local training. Needs the
``dask`` extra (dask, distributed, scikit-learn, pandas); it is imported only here, never
on the serving path, where scikit-learn would slow every start-up.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import lightgbm as lgb
import numpy as np


def train_on_dask(
    matrix: np.ndarray,
    labels: np.ndarray,
    names: Sequence[str],
    categorical: Sequence[str],
    params: dict[str, Any],
    rounds: int,
    *,
    scheduler: str | None = None,
    workers: int = 2,
) -> lgb.Booster:
    """Trains across a Dask cluster: ``scheduler`` (an address) or a local cluster of
    ``workers`` processes started for the call."""
    import dask.array as da
    from distributed import Client, LocalCluster
    from lightgbm.dask import DaskLGBMClassifier

    cluster = None
    if scheduler is None:
        cluster = LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        )
    client = Client(scheduler or cluster)
    try:
        chunk = math.ceil(matrix.shape[0] / max(len(client.scheduler_info()["workers"]), 1))
        model = DaskLGBMClassifier(
            client=client,
            n_estimators=rounds,
            num_leaves=params["num_leaves"],
            learning_rate=params["learning_rate"],
            min_child_samples=params["min_data_in_leaf"],
            reg_lambda=params["lambda_l2"],
            colsample_bytree=params["feature_fraction"],
            subsample=params["bagging_fraction"],
            subsample_freq=params["bagging_freq"],
            random_state=params["seed"],
            verbose=-1,
        )
        with warnings.catch_warnings():
            # lightgbm.dask sets n_jobs for its workers itself, then warns that it ignores it.
            warnings.filterwarnings("ignore", message="Parameter n_jobs will be ignored")
            model.fit(
                da.from_array(matrix, chunks=(chunk, matrix.shape[1])),
                da.from_array(labels, chunks=chunk),
                feature_name=list(names),
                categorical_feature=list(categorical),
            )
            booster: lgb.Booster = model.booster_
        return booster
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
