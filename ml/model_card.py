"""The model card of a trained churn model: its holdout figures and curves beside honest baselines.

Everything is measured on the model's own frozen holdout (:class:`ml.churn_model.HoldoutData`, kept by
``ChurnModel.fit``): the model's stored probabilities, and baselines trained on the same training rows'
tabular features and scored on the same holdout rows. No snapshot is rebuilt and no text is encoded again, so
the card costs the fits of the baselines (a recency rule, a logistic regression and a features-only LightGBM
with the model's LightGBM options).

The card is a JSON-ready dict (floats rounded, NaN written as None)::

    {
      "schema": 1,
      "training": {"cutoffs": [...], "n": 1200, "positives": 300, "positive_rate": 0.25},
      "holdout": {"cutoff": "2026-03-01T00:00:00+00:00", "n": 400, "positives": 96, "positive_rate": 0.24},
      "models": [
        {"key": "model", "label": "this model (lightgbm)", "metrics": {"roc_auc": ..., "lift_at_10": ...},
         "roc": {"fpr": [...], "tpr": [...]},
         "calibration": [{"lower": 0.0, "upper": 0.1, "count": 80, "mean_predicted": 0.05, "observed_rate": 0.04}]},
        {"key": "recency", "label": "recency rule", ...}, {"key": "logreg", ...}, {"key": "lightgbm", ...}
      ],
      "skipped": {"recency": "why it could not be fitted"},
      "fit_seconds": {"recency": 0.01, ...}
    }
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ml.baselines import (
    LightGBMChurn,
    LightGBMOptions,
    LogisticRegressionChurn,
    ModelNotApplicable,
    RecencyOptions,
    RecencyRule,
)
from ml.metrics import calibration_bins, churn_metrics, roc_curve_points

if TYPE_CHECKING:
    from ml.churn_model import ChurnModel, HoldoutData

__all__ = [
    "BASELINE_LABELS",
    "MODEL_CARD_SCHEMA",
    "ModelCardOptions",
    "baseline_entries",
    "churn_model_card",
    "prediction_entry",
]

MODEL_CARD_SCHEMA = 1
BASELINE_LABELS: dict[str, str] = {
    "recency": "recency rule",
    "logreg": "logistic regression",
    "lightgbm": "LightGBM (features only)",
}
_DIGITS = 5


@dataclass(frozen=True)
class ModelCardOptions:
    """Options of :func:`churn_model_card`.

    Attributes:
        roc_points: most vertices stored per ROC curve.
        calibration_bins: equal-width probability bins of the reliability diagram (those of the ECE).
        baselines: names in :data:`BASELINE_LABELS`, in the order the card lists them.
    """

    roc_points: int = 100
    calibration_bins: int = 10
    baselines: tuple[str, ...] = ("recency", "logreg", "lightgbm")

    def __post_init__(self) -> None:
        unknown = [name for name in self.baselines if name not in BASELINE_LABELS]
        if unknown:
            raise ValueError(f"unknown baseline(s) {', '.join(unknown)}; known: {', '.join(BASELINE_LABELS)}")


def _number(value: float | None) -> float | None:
    if value is None or not math.isfinite(float(value)):
        return None
    return round(float(value), _DIGITS)


def _side(y: np.ndarray) -> dict[str, object]:
    positives = int(np.asarray(y).sum())
    return {"n": len(y), "positives": positives, "positive_rate": _number(positives / len(y)) if len(y) else None}


def prediction_entry(
    y_true: np.ndarray, probabilities: np.ndarray, *, key: str, label: str, options: ModelCardOptions | None = None
) -> dict[str, object]:
    """One model's entry of the card: its metrics, ROC curve and calibration bins on these rows.

    Args:
        y_true: 0/1 holdout labels.
        probabilities: the model's churn probabilities of the same rows, in [0, 1].
        key, label: the model's stable key and the name shown in charts.
    """
    options = options or ModelCardOptions()
    y = np.asarray(y_true, dtype=int)
    p = np.clip(np.asarray(probabilities, dtype=float), 0.0, 1.0)
    roc = roc_curve_points(y, p, max_points=options.roc_points)
    return {
        "key": key,
        "label": label,
        "metrics": {name: _number(value) for name, value in churn_metrics(y, p).items()},
        "roc": {"fpr": [_number(v) for v in roc.fpr], "tpr": [_number(v) for v in roc.tpr]} if roc else None,
        "calibration": [
            {
                "lower": _number(b.lower),
                "upper": _number(b.upper),
                "count": b.count,
                "mean_predicted": _number(b.mean_predicted),
                "observed_rate": _number(b.observed_rate),
            }
            for b in calibration_bins(y, p, n_bins=options.calibration_bins)
        ],
    }


def _align(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """``frame`` with exactly ``columns`` (a column missing here is all missing values)."""
    return frame.reset_index(drop=True).reindex(columns=columns)


def baseline_entries(
    holdout: HoldoutData,
    *,
    recency_column: str | None,
    lightgbm: LightGBMOptions | None = None,
    options: ModelCardOptions | None = None,
) -> tuple[list[dict[str, object]], dict[str, str], dict[str, float]]:
    """Fit each baseline on the training rows' features and describe it on the holdout rows.

    Returns:
        The entries (as :func:`prediction_entry`), the skipped baselines with the reason, and fit seconds.
    """
    options = options or ModelCardOptions()
    columns = [str(c) for c in holdout.train_frame.columns]
    train = _align(holdout.train_frame, columns)
    test = _align(holdout.holdout_frame, columns)
    factories: Mapping[str, Callable[[], object]] = {
        "recency": lambda: RecencyRule(RecencyOptions(column=recency_column)),
        "logreg": LogisticRegressionChurn,
        "lightgbm": lambda: LightGBMChurn(lightgbm or LightGBMOptions()),
    }
    entries: list[dict[str, object]] = []
    skipped: dict[str, str] = {}
    seconds: dict[str, float] = {}
    for name in options.baselines:
        started = time.perf_counter()
        try:
            estimator = factories[name]().fit(train, holdout.y_train)  # type: ignore[attr-defined]
            churn = np.asarray(estimator.predict_proba(test), dtype=float)[:, 1]
        except (ModelNotApplicable, ValueError) as exc:
            skipped[name] = str(exc)
            continue
        seconds[name] = round(time.perf_counter() - started, 3)
        entries.append(
            prediction_entry(holdout.y_holdout, churn, key=name, label=BASELINE_LABELS[name], options=options)
        )
    return entries, skipped, seconds


def churn_model_card(model: ChurnModel, *, options: ModelCardOptions | None = None) -> dict[str, object]:
    """The card of a model just trained (see the module docstring for its shape).

    Raises:
        ValueError: the model was loaded rather than fitted here, so its holdout rows are not in memory.
    """
    options = options or ModelCardOptions()
    holdout = model.holdout_
    if holdout is None:
        raise ValueError("the model card needs the holdout kept by ChurnModel.fit; this model was loaded, not fitted")
    metadata = model.metadata
    config = model.config
    recency_column = "days_since_last_order" if config.activity == "orders" else "days_since_last_activity"
    baselines, skipped, seconds = baseline_entries(
        holdout, recency_column=recency_column, lightgbm=config.hybrid.lightgbm, options=options
    )
    text = "" if config.hybrid.text_mode == "none" else f", {config.hybrid.text_mode}"
    label = f"this model ({metadata.get('model_type')}{text})"
    cutoffs = [str(c) for c in metadata.get("cutoffs", [])]  # type: ignore[union-attr]
    holdout_cutoff = str(metadata.get("holdout_cutoff", ""))
    # The newest cutoff is the holdout; with a single cutoff a sample of its customers is held out instead.
    training_cutoffs = [c for c in cutoffs if c != holdout_cutoff] or cutoffs
    return {
        "schema": MODEL_CARD_SCHEMA,
        "training": {"cutoffs": training_cutoffs, **_side(holdout.y_train)},
        "holdout": {"cutoff": holdout_cutoff, **_side(holdout.y_holdout)},
        "models": [
            prediction_entry(holdout.y_holdout, holdout.probability, key="model", label=label, options=options),
            *baselines,
        ],
        "skipped": skipped,
        "fit_seconds": seconds,
    }
