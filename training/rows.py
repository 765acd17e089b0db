"""Training rows: one logged action each, with the inputs it was served with."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.core.model_input import ServedInputs


@dataclass(frozen=True)
class TrainingRows:
    """Row-aligned: one action that was taken (an offer made) per row.

    Built from simulated logs (training/synthetic_logs.py) or from the decision and
    outcome logs (training/logs.py); either way ``served`` holds the inputs the decision
    was served with, so ``build_matrix`` rebuilds the row that was scored.
    """

    served: list[ServedInputs]
    offer_ids: list[str]
    probability: np.ndarray  # the logging policy's probability of the action
    reward: np.ndarray  # 1 when the customer responded positively
    decision_ids: list[str] | None = None  # logs only: the decision of each row
    customer_index: np.ndarray | None = None  # simulation only: the world's customer
    true_propensity: np.ndarray | None = None  # simulation only: the hidden truth

    @property
    def rows(self) -> int:
        return int(self.reward.shape[0])

    def features(self, width: int) -> np.ndarray:
        """The customer features of every row, (rows, ``width``)."""
        return np.array([s.features for s in self.served], dtype=np.float64).reshape(-1, width)
