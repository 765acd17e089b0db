"""Scorers turn model-input rows into propensities.

``Scorer`` is what the core needs of a model; the LightGBM one lives with the adapters
(engine/adapters/lightgbm_scorer.py). ``ValueOnlyScorer`` is the trivial baseline: a
constant propensity, so arbitration ranks by value x lever alone (no model promoted, or
the model failed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Protocol

import numpy as np

from engine.core.adaptive import ModelEvidence
from engine.core.model_input import Vocabulary

BASELINE_PROPENSITY = 0.05


class Scorer(Protocol):
    version: str
    vocabulary: Vocabulary | None
    evidence: ModelEvidence  # training rows and positives per offer (the layer's prior)
    feature_stats: Mapping[str, Sequence[float]]  # customer feature -> (mean, sd) in training

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        """Propensities in 0..1, one per row."""
        ...

    def contributions(self, matrix: np.ndarray) -> np.ndarray | None:
        """Per-row log-odds contribution of each column (SHAP values), or None."""
        ...


class ValueOnlyScorer:
    version = "value-only"
    vocabulary: Vocabulary | None = None
    evidence: ModelEvidence = MappingProxyType({})
    feature_stats: Mapping[str, Sequence[float]] = MappingProxyType({})

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        return np.full(matrix.shape[0], BASELINE_PROPENSITY)

    def contributions(self, matrix: np.ndarray) -> np.ndarray | None:
        return None
