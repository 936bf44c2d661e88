"""Churn metrics: ranking (ROC AUC, PR AUC, lift in the top decile) and probability quality (Brier, ECE).

The curves behind them are here too, small enough to store and draw: :func:`roc_curve_points` (at most
``max_points`` vertices of the ROC curve) and :func:`calibration_bins` (the reliability diagram in the bins
:func:`expected_calibration_error` uses).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

__all__ = [
    "METRIC_NAMES",
    "CalibrationBin",
    "RocCurve",
    "brier_score",
    "calibration_bins",
    "churn_metrics",
    "expected_calibration_error",
    "lift_at",
    "pr_auc",
    "roc_auc",
    "roc_curve_points",
]

METRIC_NAMES: tuple[str, ...] = ("roc_auc", "pr_auc", "lift_at_10", "brier", "ece")


def _arrays(y_true: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(y_true).ravel()
    s = np.asarray(scores, dtype=float).ravel()
    if labels.shape != s.shape:
        raise ValueError(f"{len(labels)} labels but {len(s)} scores")
    if len(labels) == 0:
        raise ValueError("no examples to score")
    # Checked before the cast to int, which would read 0.4 as 0 and 1.7 as 1 (scores passed as labels, say).
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    return labels.astype(int), s


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

    The top group has ``ceil(fraction * n)`` customers. Customers tied at its boundary score share its last
    seats: they count with their group's churn rate (the expected lift when ties are broken at random), so the
    figure never depends on the order of the rows, and a score that tells nobody apart has a lift of 1.
    """
    y, s = _arrays(y_true, scores)
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    base = y.mean()
    if base == 0:
        return math.nan
    k = max(1, math.ceil(fraction * len(y)))
    boundary = np.sort(s)[::-1][k - 1]
    above, tied = s > boundary, s == boundary
    churners = y[above].sum() + (k - above.sum()) * y[tied].mean()
    return float(churners / k / base)


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
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
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


@dataclass(frozen=True)
class RocCurve:
    """Vertices of a ROC curve from (0, 0) to (1, 1): false and true positive rates, both non-decreasing."""

    fpr: tuple[float, ...]
    tpr: tuple[float, ...]

    def area(self) -> float:
        """Area under these vertices (trapezoids): the ROC AUC up to the thinning of the vertices."""
        return float(np.trapezoid(self.tpr, self.fpr))


def roc_curve_points(
    y_true: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray, max_points: int = 100
) -> RocCurve | None:
    """The ROC curve with at most ``max_points`` vertices (None when only one class is present).

    Vertices where the curve changes direction are kept (scikit-learn's ``drop_intermediate``); when more
    remain, they are thinned to points spread evenly along the curve's length, the first and last kept, so
    steep and flat stretches are both drawn and the area stays within about 1/max_points of the exact one.
    """
    from sklearn.metrics import roc_curve

    y, s = _arrays(y_true, scores)
    if max_points < 2:
        raise ValueError(f"max_points must be at least 2, got {max_points}")
    if not 0 < y.sum() < len(y):
        return None
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=True)
    if len(fpr) > max_points:
        length = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(fpr), np.diff(tpr)))])
        targets = np.linspace(0.0, length[-1], max_points)
        keep = np.unique(np.searchsorted(length, targets).clip(0, len(fpr) - 1))
        keep = np.unique(np.concatenate([[0], keep, [len(fpr) - 1]]))
        fpr, tpr = fpr[keep], tpr[keep]
    return RocCurve(fpr=tuple(float(v) for v in fpr), tpr=tuple(float(v) for v in tpr))


@dataclass(frozen=True)
class CalibrationBin:
    """One bin of a reliability diagram: probabilities in ``[lower, upper)`` (the last bin includes 1)."""

    lower: float
    upper: float
    count: int
    mean_predicted: float
    observed_rate: float


def calibration_bins(
    y_true: Sequence[int] | np.ndarray, probabilities: Sequence[float] | np.ndarray, n_bins: int = 10
) -> list[CalibrationBin]:
    """The reliability diagram: per equal-width probability bin, the mean predicted probability and the observed
    churn rate of its examples. Empty bins are left out. The bins are those of :func:`expected_calibration_error`,
    so the count-weighted mean gap between ``mean_predicted`` and ``observed_rate`` is the ECE."""
    y, p = _arrays(y_true, probabilities)
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    if ((p < 0) | (p > 1)).any():
        raise ValueError("probabilities must lie in [0, 1]")
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    return [
        CalibrationBin(
            lower=b / n_bins,
            upper=(b + 1) / n_bins,
            count=int(members.sum()),
            mean_predicted=float(p[members].mean()),
            observed_rate=float(y[members].mean()),
        )
        for b in np.unique(bins)
        if (members := bins == b).any()
    ]
