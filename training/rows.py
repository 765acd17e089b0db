"""Training rows: one logged action each, with the inputs it was served with."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TrainingRows:
    """Row-aligned: one action that was taken (an offer made) per row.

    Built from simulated logs (training/simulate.py) or from the decision and outcome
    logs (training/logs.py); either way the customer features and the offer-level inputs
    are the values the decision was served with.
    """

    features: np.ndarray  # customer features as served, (rows, len(schema.names))
    offer_ids: list[str]
    channels: list[str]
    stages: list[str]
    last_categories: list[str]
    topic_counts: list[dict[str, float]]
    probability: np.ndarray  # the logging policy's probability of the action
    reward: np.ndarray  # 1 when the customer responded positively
    decision_ids: list[str] | None = None  # logs only: the decision of each row
    customer_index: np.ndarray | None = None  # simulation only: the world's customer
    true_propensity: np.ndarray | None = None  # simulation only: the hidden truth

    @property
    def rows(self) -> int:
        return int(self.reward.shape[0])
