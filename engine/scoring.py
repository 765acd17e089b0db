"""Scorers turn model-input rows into propensities.

``LightGBMScorer`` runs a trained artifact, single-threaded (threads add no throughput
under load and fight the server for cores). ``ValueOnlyScorer`` is the trivial baseline:
a constant propensity, so arbitration ranks by value x lever alone.
"""

from __future__ import annotations

from typing import Protocol

import lightgbm as lgb
import numpy as np

from engine.artifact import ModelArtifact
from engine.errors import ConfigurationError
from engine.model_input import Vocabulary

BASELINE_PROPENSITY = 0.05


class Scorer(Protocol):
    version: str
    vocabulary: Vocabulary | None

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        """Propensities in 0..1, one per row."""
        ...

    def contributions(self, matrix: np.ndarray) -> np.ndarray | None:
        """Per-row log-odds contribution of each column (SHAP values), or None."""
        ...


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


class ValueOnlyScorer:
    version = "value-only"
    vocabulary: Vocabulary | None = None

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        return np.full(matrix.shape[0], BASELINE_PROPENSITY)

    def contributions(self, matrix: np.ndarray) -> np.ndarray | None:
        return None
