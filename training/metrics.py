"""Model quality metrics, computed with numpy alone (no scikit-learn, no scipy)."""

from __future__ import annotations

import numpy as np


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties given the mean of the ranks they span."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    return np.asarray((np.cumsum(counts) - (counts - 1) / 2)[inverse], dtype=np.float64)


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half); NaN for one class."""
    labels = labels.astype(bool)
    positives = int(labels.sum())
    negatives = labels.shape[0] - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = average_ranks(scores)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def log_loss(labels: np.ndarray, probabilities: np.ndarray, eps: float = 1e-15) -> float:
    p = np.clip(probabilities, eps, 1 - eps)
    y = labels.astype(np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def auc_standard_error(auc_value: float, positives: int, negatives: int) -> float:
    """Hanley and McNeil's (1982) standard error of an AUC from its class counts."""
    if positives == 0 or negatives == 0 or not np.isfinite(auc_value):
        return float("nan")
    a = auc_value
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    variance = (a * (1 - a) + (positives - 1) * (q1 - a * a) + (negatives - 1) * (q2 - a * a)) / (
        positives * negatives
    )
    return float(np.sqrt(max(variance, 0.0)))


def calibration_bins(
    labels: np.ndarray, probabilities: np.ndarray, bins: int = 10
) -> list[tuple[float, float, int]]:
    """(mean predicted, realised rate, rows) per bin of equal count, lowest first; bins
    with no rows are left out."""
    order = np.argsort(probabilities, kind="stable")
    out = []
    for part in np.array_split(order, min(bins, max(order.shape[0], 1))):
        if part.shape[0]:
            out.append(
                (float(probabilities[part].mean()), float(labels[part].mean()), int(part.shape[0]))
            )
    return out


def calibration_error(labels: np.ndarray, probabilities: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: the row-weighted mean gap between predicted and
    realised rates over ``calibration_bins``; NaN with no rows."""
    found = calibration_bins(labels.astype(np.float64), probabilities, bins)
    rows = sum(n for _, _, n in found)
    if rows == 0:
        return float("nan")
    return float(sum(abs(p - r) * n for p, r, n in found) / rows)
