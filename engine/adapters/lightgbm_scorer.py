"""The LightGBM scorer: runs a trained artifact, single-threaded (threads add no
throughput under load and fight the server for cores). The only serving module that
imports lightgbm; the core sees it through ``engine.core.scoring.Scorer``."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np

from common.errors import ConfigurationError
from engine.adapters.artifact import ModelArtifact
from engine.core.model_input import Vocabulary


class LightGBMScorer:
    def __init__(self, artifact: ModelArtifact) -> None:
        try:
            self._booster = lgb.Booster(model_str=artifact.model_text)
        except lgb.basic.LightGBMError as exc:
            raise ConfigurationError(f"model {artifact.version}: {exc}") from exc
        self.version = artifact.version
        self.vocabulary: Vocabulary | None = artifact.vocabulary
        self.artifact = artifact

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        return np.asarray(self._booster.predict(matrix, num_threads=1), dtype=np.float64)

    def contributions(self, matrix: np.ndarray) -> np.ndarray | None:
        values = self._booster.predict(matrix, pred_contrib=True, num_threads=1)
        return np.asarray(values, dtype=np.float64)[:, :-1]  # drop the bias column
