"""Churn metrics: ranking (ROC AUC, PR AUC, lift in the top decile) and probability quality (Brier, ECE)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

__all__ = [
    "METRIC_NAMES",
    "brier_score",
    "churn_metrics",
    "expected_calibration_error",
    "lift_at",
    "pr_auc",
    "roc_auc",
]

METRIC_NAMES: tuple[str, ...] = ("roc_auc", "pr_auc", "lift_at_10", "brier", "ece")


def _arrays(y_true: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=int).ravel()
    s = np.asarray(scores, dtype=float).ravel()
    if y.shape != s.shape:
        raise ValueError(f"{len(y)} labels but {len(s)} scores")
    if len(y) == 0:
        raise ValueError("no examples to score")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    return y, s


def roc_auc(y_true: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """Area under the ROC curve; NaN when only one class is present."""
    y, s = _arrays(y_true, scores)
    return float(roc_auc_score(y, s)) if 0 < y.sum() < len(y) else math.nan


def pr_auc(y_true: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """Average precision (area under the precision-recall curve); NaN without positives."""
    y, s = _arrays(y_true, scores)
    return float(average_precision_score(y, s)) if y.sum() > 0 else math.nan


def lift_at(y_true: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray, fraction: float = 0.1) -> float:
    """Churn rate among the ``fraction`` highest scores divided by the base rate.

    The top group has ``ceil(fraction * n)`` customers; ties at the boundary are broken by a stable
    sort on the score (earlier rows first), so the figure is deterministic.
    """
    y, s = _arrays(y_true, scores)
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    base = y.mean()
    if base == 0:
        return math.nan
    k = max(1, math.ceil(fraction * len(y)))
    top = np.argsort(-s, kind="stable")[:k]
    return float(y[top].mean() / base)


def brier_score(y_true: Sequence[int] | np.ndarray, probabilities: Sequence[float] | np.ndarray) -> float:
    """Mean squared difference between the churn probability and the outcome."""
    y, p = _arrays(y_true, probabilities)
    return float(np.mean((p - y) ** 2))


def expected_calibration_error(
    y_true: Sequence[int] | np.ndarray, probabilities: Sequence[float] | np.ndarray, n_bins: int = 10
) -> float:
    """Expected calibration error with ``n_bins`` equal-width bins on [0, 1].

    Sum over bins of (share of examples in the bin) x |mean probability - churn rate in the bin|.
    A probability of exactly 1 falls in the last bin.
    """
    y, p = _arrays(y_true, probabilities)
    if ((p < 0) | (p > 1)).any():
        raise ValueError("probabilities must lie in [0, 1]")
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    error = 0.0
    for b in np.unique(bins):
        members = bins == b
        error += members.mean() * abs(p[members].mean() - y[members].mean())
    return float(error)


def churn_metrics(y_true: Sequence[int] | np.ndarray, probabilities: Sequence[float] | np.ndarray) -> dict[str, float]:
    """All metrics of :data:`METRIC_NAMES` for one set of predictions."""
    return {
        "roc_auc": roc_auc(y_true, probabilities),
        "pr_auc": pr_auc(y_true, probabilities),
        "lift_at_10": lift_at(y_true, probabilities, 0.1),
        "brier": brier_score(y_true, probabilities),
        "ece": expected_calibration_error(y_true, probabilities),
    }
