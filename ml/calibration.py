"""Probability calibration chosen on held-out data: isotonic regression or Platt (sigmoid) scaling.

:class:`Calibrator` maps a model's raw churn scores (probabilities that may be too sharp or too flat) to
calibrated probabilities. With ``method="auto"`` it cross-validates both methods on the scores it is given
(which must be held-out scores: out-of-fold predictions, never the model's in-sample output) and keeps the
one with the lower Brier score; a tie goes to Platt, which has two parameters and cannot over-fit.

The state is plain JSON (:meth:`Calibrator.to_json`): Platt keeps ``a`` and ``b`` of
``p = 1 / (1 + exp(-(a * logit(score) + b)))``; isotonic keeps its threshold arrays and applies them with
linear interpolation, clipped at the ends (what scikit-learn's ``IsotonicRegression`` does).

Isotonic regression is a step function: every raw score on one step gets the same probability, so a model's
ranking inside a step would be thrown away (ties lower ROC AUC and make the top-k order arbitrary). The isotonic
output is therefore blended with the raw score, ``(1 - 1e-6) * isotonic + 1e-6 * score``: probabilities move by
at most one in a million, and customers keep the model's order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

__all__ = ["CALIBRATION_METHODS", "CalibrationConfig", "Calibrator"]

Method = Literal["auto", "isotonic", "platt", "none"]
CALIBRATION_METHODS: tuple[str, ...] = ("auto", "isotonic", "platt", "none")
_EPS = 1e-6
_TIE_BREAK = 1e-6  # weight of the raw score in the isotonic output (module docstring)


@dataclass(frozen=True)
class CalibrationConfig:
    """Options of :class:`Calibrator`.

    Attributes:
        method: ``"auto"`` (choose by cross-validated Brier score), ``"isotonic"``, ``"platt"`` or ``"none"``.
        folds: folds of the stratified cross-validation that compares the methods.
        min_isotonic_rows: below this many rows isotonic is not considered (it over-fits small data).
        random_state: seed of the folds.
    """

    method: Method = "auto"
    folds: int = 5
    min_isotonic_rows: int = 100
    random_state: int = 0

    def __post_init__(self) -> None:
        if self.method not in CALIBRATION_METHODS:
            raise ValueError(f"calibration method must be one of {', '.join(CALIBRATION_METHODS)}, not {self.method!r}")
        if self.folds < 2:
            raise ValueError(f"calibration folds must be at least 2, got {self.folds}")


def _logit(scores: np.ndarray) -> np.ndarray:
    clipped = np.clip(scores, _EPS, 1.0 - _EPS)
    return np.log(clipped / (1.0 - clipped))


def _fit_platt(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    from sklearn.linear_model import LogisticRegression

    logits = _logit(scores)
    if np.ptp(logits) == 0:  # no spread: the slope is undetermined (the solver stops anywhere); the base rate only
        rate = float(np.clip(labels.mean(), _EPS, 1.0 - _EPS))
        return 0.0, float(np.log(rate / (1.0 - rate)))
    fitted = LogisticRegression(C=1e6, max_iter=1000).fit(logits[:, None], labels)
    return float(fitted.coef_[0, 0]), float(fitted.intercept_[0])


def _apply_platt(scores: np.ndarray, a: float, b: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(a * _logit(scores) + b)))


def _fit_isotonic(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.isotonic import IsotonicRegression

    fitted = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(scores, labels)
    return np.asarray(fitted.X_thresholds_, dtype=float), np.asarray(fitted.y_thresholds_, dtype=float)


def _apply_isotonic(scores: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (1.0 - _TIE_BREAK) * np.interp(scores, x, y) + _TIE_BREAK * np.clip(scores, 0.0, 1.0)


class Calibrator:
    """Raw churn scores in [0, 1] -> calibrated churn probabilities (see the module docstring).

    Attributes (after :meth:`fit`):
        method_: the method used (``"isotonic"``, ``"platt"`` or ``"none"``).
        cv_brier_: cross-validated Brier score of each method compared (empty unless ``method="auto"``).
        held_out_: the chosen method's calibrated scores of the fitted rows, each from a calibration fitted on the
            other folds (None when the rows are too few to fold; not saved): what its quality is measured on.
    """

    def __init__(self, config: CalibrationConfig | None = None) -> None:
        self.config = config or CalibrationConfig()
        self.method_: str | None = None
        self.cv_brier_: dict[str, float] = {}
        self.held_out_: np.ndarray | None = None
        self.platt_: tuple[float, float] = (1.0, 0.0)
        self.isotonic_x_: np.ndarray = np.zeros(0)
        self.isotonic_y_: np.ndarray = np.zeros(0)

    def fit(
        self,
        scores: Sequence[float] | np.ndarray,
        y: Sequence[int] | np.ndarray,
        *,
        groups: Sequence[object] | None = None,
    ) -> Calibrator:
        """Fit on held-out scores and their 0/1 labels; returns ``self``.

        ``groups`` (one customer id per row) keeps each customer's rows in one fold of the cross-validation that
        compares the methods and gives :attr:`held_out_`.
        """
        s, labels = _check(scores, y)
        method = self.config.method
        compared = ["platt", "isotonic"] if method == "auto" else [method]
        held_out = self._cross_fit(s, labels, compared, groups)
        self.cv_brier_ = {}
        if method == "auto" and all(p is None for p in held_out.values()):
            self.cv_brier_, method = {"platt": math.nan}, "platt"  # too few rows to compare: the 2-parameter fit
        elif method == "auto":
            self.cv_brier_ = {m: float(np.mean((p - labels) ** 2)) for m, p in held_out.items() if p is not None}
            method = min(self.cv_brier_, key=lambda m: (round(self.cv_brier_[m], 12), m != "platt"))
        self.method_ = method
        if method == "platt":
            self.platt_ = _fit_platt(s, labels)
        elif method == "isotonic":
            self.isotonic_x_, self.isotonic_y_ = _fit_isotonic(s, labels)
        self.held_out_ = held_out.get(method)
        return self

    def _cross_fit(
        self, scores: np.ndarray, labels: np.ndarray, methods: list[str], groups: Sequence[object] | None
    ) -> dict[str, np.ndarray | None]:
        """Each method's calibrated scores of every row from a fit on the other folds (None: too few rows)."""
        from ml.folds import stratified_folds

        if "isotonic" in methods and "platt" in methods and len(labels) < self.config.min_isotonic_rows:
            methods = ["platt"]
        if methods == ["none"]:
            return {"none": np.clip(scores, 0.0, 1.0)}
        folds = min(self.config.folds, int(np.bincount(labels, minlength=2).min()))
        try:
            splits = stratified_folds(labels, folds, seed=self.config.random_state, groups=groups) if folds >= 2 else []
        except ValueError:
            splits = []
        if not splits or any(len(np.unique(labels[train])) < 2 for train, _ in splits):
            return {m: None for m in methods}
        held_out = {m: np.zeros(len(labels)) for m in methods}
        for train, test in splits:
            if "platt" in held_out:
                a, b = _fit_platt(scores[train], labels[train])
                held_out["platt"][test] = _apply_platt(scores[test], a, b)
            if "isotonic" in held_out:
                x, y = _fit_isotonic(scores[train], labels[train])
                held_out["isotonic"][test] = _apply_isotonic(scores[test], x, y)
        return dict(held_out)

    def transform(self, scores: Sequence[float] | np.ndarray) -> np.ndarray:
        """Calibrated churn probabilities, shape ``(n,)``."""
        if self.method_ is None:
            raise RuntimeError("this Calibrator is not fitted yet; call fit() or from_json() first")
        s = np.asarray(scores, dtype=float).ravel()
        if self.method_ == "platt":
            return _apply_platt(s, *self.platt_)
        if self.method_ == "isotonic":
            return _apply_isotonic(s, self.isotonic_x_, self.isotonic_y_)
        return np.clip(s, 0.0, 1.0)

    def to_json(self) -> dict[str, object]:
        """The fitted state as plain JSON."""
        if self.method_ is None:
            raise RuntimeError("this Calibrator is not fitted yet")
        state: dict[str, object] = {"config": asdict(self.config), "method": self.method_, "cv_brier": self.cv_brier_}
        if self.method_ == "platt":
            state["a"], state["b"] = self.platt_
        elif self.method_ == "isotonic":
            state["thresholds_x"] = [float(v) for v in self.isotonic_x_]
            state["thresholds_y"] = [float(v) for v in self.isotonic_y_]
        return state

    @classmethod
    def from_json(cls, state: Mapping[str, object]) -> Calibrator:
        """Rebuild a fitted calibrator from :meth:`to_json`; a state missing a field raises ``ValueError``."""
        try:
            calibrator = cls(CalibrationConfig(**dict(state["config"])))  # type: ignore[arg-type]
            method = str(state["method"])
            if method == "platt":
                calibrator.platt_ = (float(state["a"]), float(state["b"]))  # type: ignore[arg-type]
                if not np.isfinite(calibrator.platt_).all():
                    raise ValueError(f"Platt parameters are not finite numbers: {calibrator.platt_}")
            elif method == "isotonic":
                x = calibrator.isotonic_x_ = np.asarray(state["thresholds_x"], dtype=float)
                y = calibrator.isotonic_y_ = np.asarray(state["thresholds_y"], dtype=float)
                if len(x) == 0 or len(x) != len(y) or x.ndim != 1 or y.ndim != 1:
                    raise ValueError("isotonic thresholds are empty or of different lengths")
                if not (np.isfinite(x).all() and np.isfinite(y).all()):
                    raise ValueError("isotonic thresholds are not all finite numbers")
                if (np.diff(x) < 0).any() or (np.diff(y) < 0).any() or y.min() < 0 or y.max() > 1:
                    raise ValueError("isotonic thresholds do not rise from 0 to 1 at most (not a calibration)")
            elif method != "none":
                raise ValueError(f"unknown calibration method {method!r}")
        except (KeyError, TypeError) as exc:
            raise ValueError(f"calibration state is incomplete: {exc}") from exc
        calibrator.method_ = method
        cv_brier = dict(state.get("cv_brier") or {})  # type: ignore[arg-type]
        calibrator.cv_brier_ = {str(k): math.nan if v is None else float(v) for k, v in cv_brier.items()}
        return calibrator


def _check(scores: Sequence[float] | np.ndarray, y: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=float).ravel()
    labels = np.asarray(y).ravel()
    if len(s) != len(labels):
        raise ValueError(f"{len(s)} scores but {len(labels)} labels")
    if not np.isfinite(s).all():
        raise ValueError(f"score of row {int(np.flatnonzero(~np.isfinite(s))[0])} is not a finite number")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    labels = labels.astype(int)
    if labels.min() == labels.max():
        raise ValueError("calibration needs both churners and non-churners in its held-out data")
    return s, labels
