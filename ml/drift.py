"""Population stability of churn scores and of the model's top features.

A *profile* summarises a reference distribution (the champion's population at its newest training
cutoff): numeric values by the fractions falling between reference deciles, categorical values by the
fraction of each category. :func:`psi` compares a new sample with a profile:
``PSI = sum((p_new - p_ref) * ln(p_new / p_ref))`` over the bins, with empty bins smoothed. The common
reading is: below 0.1 stable, 0.1 to 0.25 moderate shift, above 0.25 a major shift.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from ml.churn_model import ChurnModel
    from ml.snapshot import Snapshot

__all__ = ["SMOOTHING", "drift_report", "feature_frame", "profile", "psi", "reference_profile", "top_features"]

SMOOTHING = 1e-4
MISSING = "(missing)"


def profile(values: Sequence[object] | np.ndarray | pd.Series, *, bins: int = 10) -> dict[str, object]:
    """The distribution of ``values`` as JSON: numeric deciles with fractions, or category fractions."""
    series = pd.Series(list(values) if not isinstance(values, pd.Series) else values)
    numeric = pd.to_numeric(series, errors="coerce")
    if len(series) and numeric.notna().sum() >= 0.9 * series.notna().sum() and series.notna().any():
        finite = numeric.dropna().to_numpy(dtype=float)
        finite = finite[np.isfinite(finite)]  # an infinite value falls in an outer bin; as an edge it would be NaN
        edges = np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1])) if len(finite) else np.array([])
        return {
            "kind": "numeric",
            "edges": [float(e) for e in edges],
            "fractions": _numeric_fractions(numeric, edges),
        }
    labels = series.map(lambda v: MISSING if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
    counts = labels.value_counts(normalize=True)
    return {"kind": "categorical", "fractions": {str(k): float(v) for k, v in counts.items()}}


def _numeric_fractions(numeric: pd.Series, edges: np.ndarray) -> list[float]:
    """Fractions per bin ``(-inf, e0], (e0, e1], ..., (e_last, inf)`` plus a last bin for missing values."""
    total = len(numeric)
    if total == 0:
        return [0.0] * (len(edges) + 2)
    present = numeric.dropna().to_numpy(dtype=float)
    counts = np.bincount(np.searchsorted(edges, present, side="left"), minlength=len(edges) + 1)
    return [float(c) / total for c in counts] + [float(numeric.isna().sum()) / total]


def psi(reference: dict[str, object], values: Sequence[object] | np.ndarray | pd.Series) -> float:
    """Population stability index of ``values`` against a :func:`profile`."""
    series = pd.Series(list(values) if not isinstance(values, pd.Series) else values)
    if reference["kind"] == "numeric":
        expected = np.asarray(reference["fractions"], dtype=float)
        actual = np.asarray(
            _numeric_fractions(pd.to_numeric(series, errors="coerce"), np.asarray(reference["edges"], dtype=float))
        )
    else:
        ref = dict(reference["fractions"])  # type: ignore[arg-type]
        labels = series.map(lambda v: MISSING if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
        now = labels.value_counts(normalize=True).to_dict() if len(labels) else {}
        keys = sorted(set(ref) | set(now))
        expected = np.array([ref.get(k, 0.0) for k in keys], dtype=float)
        actual = np.array([now.get(k, 0.0) for k in keys], dtype=float)
    expected = np.clip(expected, SMOOTHING, None)
    actual = np.clip(actual, SMOOTHING, None)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def feature_frame(model: ChurnModel, snapshots: Sequence[Snapshot]) -> pd.DataFrame:
    """The engineered features the model reads for ``snapshots`` (columns aligned to its training)."""
    return model._frame(list(snapshots))  # noqa: SLF001 - same package: the model's own feature alignment


def top_features(model: ChurnModel, n: int = 5) -> list[str]:
    """The ``n`` engineered features with the largest total gain in the model's LightGBM stage."""
    hybrid = model._check_fitted()  # noqa: SLF001 - same package
    gains = hybrid.lightgbm_.feature_importances()  # type: ignore[union-attr]
    engineered = set(model.column_kinds_)
    ranked = sorted((name for name in gains if name in engineered), key=lambda name: -gains[name])
    return ranked[:n]


def reference_profile(model: ChurnModel, snapshots: Sequence[Snapshot], *, n_features: int = 5) -> dict[str, object]:
    """Profiles of the model's scores and top features on a reference population."""
    snapshots = list(snapshots)
    frame = feature_frame(model, snapshots)
    return {
        "n": len(snapshots),
        "scores": profile(model.predict_proba(snapshots)),
        "features": {name: profile(frame[name]) for name in top_features(model, n_features) if name in frame},
    }


def drift_report(
    reference: dict[str, object], scores: Sequence[float] | np.ndarray, frame: pd.DataFrame | None, *, threshold: float
) -> dict[str, object]:
    """PSI of the scores and of each profiled feature; ``drifted`` when any exceeds ``threshold``."""
    score_psi = psi(reference["scores"], scores)  # type: ignore[arg-type]
    feature_psi = {
        name: psi(feature_profile, frame[name])
        for name, feature_profile in dict(reference.get("features") or {}).items()  # type: ignore[arg-type]
        if frame is not None and name in frame
    }
    worst = max([score_psi, *feature_psi.values()])
    return {
        "score_psi": score_psi,
        "feature_psi": feature_psi,
        "max_psi": worst,
        "threshold": threshold,
        "drifted": worst > threshold,
    }
