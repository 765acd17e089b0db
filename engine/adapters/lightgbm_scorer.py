"""The LightGBM scorer: runs a trained artifact, single-threaded (threads add no
throughput under load and fight the server for cores), on its compiled trees when they
may serve. With compiled.py, the only serving modules that import lightgbm; the core
sees them through ``engine.core.scoring.Scorer``."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import lightgbm as lgb
import numpy as np

from common.errors import ConfigurationError
from engine.adapters import compiled
from engine.adapters.artifact import ModelArtifact
from engine.core import adaptive
from engine.core.model_input import Vocabulary

log = logging.getLogger(__name__)


class LightGBMScorer:
    """Scores with the artifact's compiled trees when they may serve (compiled.py), else
    with ``Booster.predict``; contributions always come from the booster."""

    def __init__(self, artifact: ModelArtifact, *, use_compiled: bool = True) -> None:
        try:
            self._booster = lgb.Booster(model_str=artifact.model_text)
        except lgb.basic.LightGBMError as exc:
            raise ConfigurationError(f"model {artifact.version}: {exc}") from exc
        self.version = artifact.version
        self.vocabulary: Vocabulary | None = artifact.vocabulary
        self.artifact = artifact
        self.evidence: adaptive.ModelEvidence = adaptive.evidence_from(
            artifact.training.get("offers")
        )
        self.feature_stats: Mapping[str, Sequence[float]] = dict(
            artifact.training.get("feature_stats", {})
        )
        if "offers" not in artifact.training and artifact.vocabulary is not None:
            # trained before models kept their evidence: taken as knowing every offer
            self.evidence = dict.fromkeys(artifact.vocabulary.offer_ids, adaptive.KNOWN)
        self._compiled, self.engine = (
            compiled.load(artifact, self._booster) if use_compiled else (None, "LightGBM")
        )
        if self._compiled is None and use_compiled:
            log.info("model %s scores with LightGBM: %s", artifact.version, self.engine)

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        if self._compiled is not None:
            return self._compiled(matrix)
        return np.asarray(self._booster.predict(matrix, num_threads=1), dtype=np.float64)

    def contributions(self, matrix: np.ndarray) -> np.ndarray | None:
        values = self._booster.predict(matrix, pred_contrib=True, num_threads=1)
        return np.asarray(values, dtype=np.float64)[:, :-1]  # drop the bias column
