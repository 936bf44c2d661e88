"""Baseline churn models behind the estimator interface every model here shares.

``fit(frame, y) -> self``, ``predict_proba(frame) -> (n, 2)`` (scikit-learn's convention: column 1
is the churn probability), ``save(path)`` and classmethod ``load(path)``. Saved models are artifact
directories (``ml.artifacts``: safetensors + JSON + sha256 manifest), never pickle; LightGBM is kept
in its own text model format inside the artifact.

* :class:`RecencyRule`: the score is the days since the last activity; a one-feature logistic fit on
  ``log1p(days)`` (slope kept > 0) turns it into a probability without changing the ranking.
* :class:`LogisticRegressionChurn`: numeric columns median-imputed (with missing-value indicators) and
  standardised, categorical columns one-hot encoded, scikit-learn ``LogisticRegression``.
* :class:`LightGBMChurn`: gradient-boosted trees with native missing values and categories; the number
  of trees (early stopping) and the leaf count are chosen on an inner split of the training data only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ml.artifacts import ArtifactError, artifact_loader, load_artifact, save_artifact

__all__ = [
    "LightGBMChurn",
    "LightGBMOptions",
    "LogisticRegressionChurn",
    "LogisticRegressionOptions",
    "ModelNotApplicable",
    "RecencyOptions",
    "RecencyRule",
    "TabularEncoder",
    "find_recency_column",
    "with_string_columns",
]

MISSING_CATEGORY = "(missing)"
RECENCY_NAMES = (
    "days_since_last_activity",
    "days_since_last_order",
    "dayssincelastorder",
    "daysincelastorder",
    "dayssincelastpurchase",
    "dayssincelastactivity",
    "recency",
    "recency_days",
)


class ModelNotApplicable(ValueError):
    """The model cannot be used on this data (for example the recency rule without activity times)."""


def _check_fitted(model: object, attribute: str) -> None:
    if getattr(model, attribute, None) is None:
        raise RuntimeError(f"{type(model).__name__} is not fitted yet: call fit() or load() first")


def _as_binary(y: Sequence[int] | np.ndarray) -> np.ndarray:
    labels = np.asarray(y, dtype=int).ravel()
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 (stayed) or 1 (churned)")
    if labels.min() == labels.max():
        raise ValueError("training labels hold a single class; a churn model needs both churners and non-churners")
    return labels


def _two_columns(churn: np.ndarray) -> np.ndarray:
    churn = np.clip(np.asarray(churn, dtype=float), 0.0, 1.0)
    return np.column_stack([1.0 - churn, churn])


def _load_checked(path: str | Path, kind: str) -> tuple[dict[str, np.ndarray], dict[str, object], dict[str, bytes]]:
    tensors, metadata, files = load_artifact(path)
    if metadata.get("kind") != kind:
        raise ArtifactError(f"model artifact {path} holds a {metadata.get('kind')!r} model, not {kind!r}")
    return tensors, metadata, files


@dataclass
class TabularEncoder:
    """Numeric and categorical columns to a float matrix, with state that saves as JSON.

    Numeric columns: missing values replaced by the training median (plus a 0/1 indicator for columns
    that had missing values in training), then standardised with the training mean and standard deviation.
    Categorical columns: one-hot over the categories seen in training (the ``max_categories`` most
    frequent; missing is a category of its own); unseen values encode as all zeros.
    """

    max_categories: int = 50
    scale: bool = True
    numeric_: list[str] | None = None
    categorical_: list[str] = field(default_factory=list)
    medians_: list[float] = field(default_factory=list)
    means_: list[float] = field(default_factory=list)
    scales_: list[float] = field(default_factory=list)
    indicators_: list[str] = field(default_factory=list)
    categories_: dict[str, list[str]] = field(default_factory=dict)

    def fit(self, frame: pd.DataFrame) -> TabularEncoder:
        frame = with_string_columns(frame)
        self.numeric_ = [str(c) for c in frame.columns if _is_numeric(frame[c])]
        self.categorical_ = [str(c) for c in frame.columns if str(c) not in self.numeric_]
        numeric = frame[self.numeric_].astype(float) if self.numeric_ else pd.DataFrame(index=frame.index)
        medians = numeric.median().fillna(0.0)
        self.medians_ = [float(medians[c]) for c in self.numeric_]
        self.indicators_ = [c for c in self.numeric_ if numeric[c].isna().any()]
        filled = numeric.fillna(medians)
        self.means_ = [float(filled[c].mean()) if self.scale else 0.0 for c in self.numeric_]
        stds = [float(filled[c].std(ddof=0)) for c in self.numeric_]
        self.scales_ = [s if self.scale and s > 0 else 1.0 for s in stds]
        self.categories_ = {}
        for column in self.categorical_:
            counts = _categorical(frame[column]).value_counts()
            top = sorted(counts.index, key=lambda v: (-counts[v], v))[: self.max_categories]
            self.categories_[column] = sorted(top)
        return self

    @property
    def feature_names_(self) -> list[str]:
        _check_fitted(self, "numeric_")
        names = list(self.numeric_ or [])
        names += [f"{c} is missing" for c in self.indicators_]
        for column in self.categorical_:
            names += [f"{column} = {value}" for value in self.categories_[column]]
        return names

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        _check_fitted(self, "numeric_")
        frame = with_string_columns(frame)
        numeric_cols = self.numeric_ or []
        missing = [c for c in [*numeric_cols, *self.categorical_] if c not in frame.columns]
        if missing:
            raise ValueError(f"columns missing from the data: {', '.join(missing)}")
        blocks: list[np.ndarray] = []
        if numeric_cols:
            values = frame[numeric_cols].astype(float).to_numpy()
            medians = np.asarray(self.medians_)
            nan = np.isnan(values)
            values = np.where(nan, medians, values)
            blocks.append((values - np.asarray(self.means_)) / np.asarray(self.scales_))
            if self.indicators_:
                positions = [numeric_cols.index(c) for c in self.indicators_]
                blocks.append(nan[:, positions].astype(float))
        for column in self.categorical_:
            values = _categorical(frame[column]).to_numpy()
            categories = self.categories_[column]
            blocks.append((values[:, None] == np.asarray(categories, dtype=object)[None, :]).astype(float))
        if not blocks:
            return np.zeros((len(frame), 0))
        return np.hstack(blocks)

    def to_json(self) -> dict[str, object]:
        return {
            "max_categories": self.max_categories,
            "scale": self.scale,
            "numeric": self.numeric_,
            "categorical": self.categorical_,
            "medians": self.medians_,
            "means": self.means_,
            "scales": self.scales_,
            "indicators": self.indicators_,
            "categories": self.categories_,
        }

    @classmethod
    def from_json(cls, state: Mapping[str, object]) -> TabularEncoder:
        return cls(
            max_categories=int(state["max_categories"]),  # type: ignore[arg-type]
            scale=bool(state["scale"]),
            numeric_=list(state["numeric"]),  # type: ignore[arg-type]
            categorical_=list(state["categorical"]),  # type: ignore[arg-type]
            medians_=[float(v) for v in state["medians"]],  # type: ignore[union-attr]
            means_=[float(v) for v in state["means"]],  # type: ignore[union-attr]
            scales_=[float(v) for v in state["scales"]],  # type: ignore[union-attr]
            indicators_=list(state["indicators"]),  # type: ignore[arg-type]
            categories_={str(k): list(v) for k, v in dict(state["categories"]).items()},  # type: ignore[arg-type]
        )


def with_string_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its column names as strings (models record and look up columns by name)."""
    if all(isinstance(c, str) for c in frame.columns):
        return frame
    renamed = frame.rename(columns=str)
    if renamed.columns.has_duplicates:
        raise ValueError(f"column names clash once written as text: {list(frame.columns)}")
    return renamed


def _is_numeric(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)


def _categorical(values: pd.Series) -> pd.Series:
    return values.map(lambda v: MISSING_CATEGORY if _is_missing(v) else str(v)).astype(object)


def _is_missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


# --- recency rule --------------------------------------------------------------------------------------------


def find_recency_column(columns: Sequence[str], preferred: str | None = None) -> str | None:
    """The column holding days since the last activity, by name (``preferred`` wins when present)."""
    if preferred:
        return preferred if preferred in columns else None
    normalised = {re.sub(r"[^a-z]", "", str(c).lower()): str(c) for c in columns}
    for name in RECENCY_NAMES:
        key = re.sub(r"[^a-z]", "", name)
        if key in normalised:
            return normalised[key]
    return None


@dataclass(frozen=True)
class RecencyOptions:
    """Options of :class:`RecencyRule`.

    Attributes:
        column: the days-since-last-activity column; None finds it by name (``days_since_last_order``,
            ``DaySinceLastOrder``, ...). Data without such a column raises :class:`ModelNotApplicable`.
    """

    column: str | None = None


class RecencyRule:
    """Score = days since the last activity; probability = sigmoid(a + b * log1p(days)), b > 0."""

    kind = "recency"

    def __init__(self, options: RecencyOptions | None = None) -> None:
        self.options = options or RecencyOptions()
        self.column_: str | None = None
        self.fill_: float = 0.0
        self.intercept_: float = 0.0
        self.slope_: float = 0.0

    def fit(self, frame: pd.DataFrame, y: Sequence[int] | np.ndarray) -> RecencyRule:
        from sklearn.linear_model import LogisticRegression

        labels = _as_binary(y)
        column = find_recency_column(list(map(str, frame.columns)), self.options.column)
        if column is None:
            raise ModelNotApplicable("the recency rule needs a days-since-last-activity column; this data has none")
        days = frame[column].astype(float).to_numpy()
        fill = float(np.nanmedian(days)) if np.isfinite(days).any() else 0.0
        x = np.log1p(np.clip(np.where(np.isnan(days), fill, days), 0, None))[:, None]
        fitted = LogisticRegression().fit(x, labels)
        slope, intercept = float(fitted.coef_[0, 0]), float(fitted.intercept_[0])
        if slope <= 0:
            # The data says idle days do not raise churn here; the rule's ranking is kept anyway (so its
            # ROC AUC is the honest one of "more idle days, more churn") with near-base-rate probabilities.
            rate = labels.mean()
            slope = 1e-6
            intercept = math.log(rate / (1 - rate)) - slope * float(x.mean())
        self.column_, self.fill_, self.intercept_, self.slope_ = column, fill, intercept, slope
        return self

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        """The rule's raw score: days since the last activity (missing -> training median)."""
        _check_fitted(self, "column_")
        days = frame[self.column_].astype(float).to_numpy()
        return np.where(np.isnan(days), self.fill_, days)

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        z = self.intercept_ + self.slope_ * np.log1p(np.clip(self.score(frame), 0, None))
        return _two_columns(1.0 / (1.0 + np.exp(-z)))

    def save(self, path: str | Path) -> Path:
        _check_fitted(self, "column_")
        return save_artifact(
            path,
            tensors={"coef": np.array([self.intercept_, self.slope_, self.fill_], dtype=np.float64)},
            metadata={"kind": self.kind, "options": asdict(self.options), "column": self.column_},
        )

    @classmethod
    @artifact_loader
    def load(cls, path: str | Path) -> RecencyRule:
        tensors, metadata, _ = _load_checked(path, cls.kind)
        model = cls(RecencyOptions(**metadata["options"]))  # type: ignore[arg-type]
        model.intercept_, model.slope_, model.fill_ = (float(v) for v in tensors["coef"])
        model.column_ = str(metadata["column"])
        return model


# --- logistic regression -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogisticRegressionOptions:
    """Options of :class:`LogisticRegressionChurn` (defaults are scikit-learn's, as in the reference figures).

    Attributes:
        C: inverse regularisation strength.
        C_grid: when not empty, C is chosen from it by ROC AUC on an inner stratified split of the
            training data (``inner_valid_fraction``), then the model is refitted on all training data.
        class_weight: None or ``"balanced"``.
        max_iter: solver iterations.
        max_categories: most one-hot categories per column.
        random_state: seed of the inner split.
    """

    C: float = 1.0
    C_grid: tuple[float, ...] = ()
    class_weight: str | None = None
    max_iter: int = 1000
    max_categories: int = 50
    inner_valid_fraction: float = 0.2
    random_state: int = 0


def _inner_holdout(
    labels: np.ndarray, fraction: float, *, seed: int, groups: Sequence[object] | None
) -> tuple[np.ndarray, np.ndarray]:
    """The inner split that chooses a model's settings: customers kept whole (:func:`ml.folds.stratified_holdout`),
    and the rows of a single customer split as rows, the only split they have."""
    from ml.folds import stratified_holdout

    if groups is not None and len({str(g) for g in groups}) < 2:
        groups = None
    return stratified_holdout(labels, fraction, seed=seed, groups=groups)


class LogisticRegressionChurn:
    kind = "logreg"

    def __init__(self, options: LogisticRegressionOptions | None = None) -> None:
        self.options = options or LogisticRegressionOptions()
        self.encoder_: TabularEncoder | None = None
        self.coef_: np.ndarray | None = None
        self.intercept_: float = 0.0
        self.C_: float = self.options.C

    def fit(
        self, frame: pd.DataFrame, y: Sequence[int] | np.ndarray, *, groups: Sequence[object] | None = None
    ) -> LogisticRegressionChurn:
        """Fit; ``groups`` (one customer id per row) keeps each customer on one side of the split that picks C."""
        labels = _as_binary(y)
        o = self.options
        self.C_ = o.C
        if o.C_grid:
            from ml.metrics import roc_auc

            inner_train, inner_valid = _inner_holdout(
                labels, o.inner_valid_fraction, seed=o.random_state, groups=groups
            )
            scores = {}
            for c in o.C_grid:
                encoder = TabularEncoder(max_categories=o.max_categories).fit(frame.iloc[inner_train])
                coef, intercept = self._solve(encoder.transform(frame.iloc[inner_train]), labels[inner_train], c)
                valid = encoder.transform(frame.iloc[inner_valid]) @ coef + intercept
                scores[c] = roc_auc(labels[inner_valid], valid)
            self.C_ = max(o.C_grid, key=lambda c: (scores[c], -abs(math.log(c))))
        self.encoder_ = TabularEncoder(max_categories=o.max_categories).fit(frame)
        self.coef_, self.intercept_ = self._solve(self.encoder_.transform(frame), labels, self.C_)
        return self

    def _solve(self, x: np.ndarray, labels: np.ndarray, c: float) -> tuple[np.ndarray, float]:
        from sklearn.linear_model import LogisticRegression

        fitted = LogisticRegression(C=c, class_weight=self.options.class_weight, max_iter=self.options.max_iter)
        fitted.fit(x, labels)
        return fitted.coef_[0].astype(np.float64), float(fitted.intercept_[0])

    def decision_function(self, frame: pd.DataFrame) -> np.ndarray:
        _check_fitted(self, "coef_")
        return self.encoder_.transform(frame) @ self.coef_ + self.intercept_  # type: ignore[union-attr]

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        return _two_columns(1.0 / (1.0 + np.exp(-self.decision_function(frame))))

    def coefficients(self) -> dict[str, float]:
        """Coefficient per encoded feature name (readable, for explanations)."""
        _check_fitted(self, "coef_")
        return dict(zip(self.encoder_.feature_names_, map(float, self.coef_), strict=True))  # type: ignore[union-attr]

    def save(self, path: str | Path) -> Path:
        _check_fitted(self, "coef_")
        return save_artifact(
            path,
            tensors={"coef": self.coef_, "intercept": np.array([self.intercept_])},
            metadata={
                "kind": self.kind,
                "options": asdict(self.options),
                "C": self.C_,
                "encoder": self.encoder_.to_json(),  # type: ignore[union-attr]
                "features": self.encoder_.feature_names_,  # type: ignore[union-attr]
            },
        )

    @classmethod
    @artifact_loader
    def load(cls, path: str | Path) -> LogisticRegressionChurn:
        tensors, metadata, _ = _load_checked(path, cls.kind)
        options = dict(metadata["options"])  # type: ignore[arg-type]
        options["C_grid"] = tuple(options.get("C_grid") or ())
        model = cls(LogisticRegressionOptions(**options))
        model.encoder_ = TabularEncoder.from_json(metadata["encoder"])  # type: ignore[arg-type]
        model.coef_ = tensors["coef"].astype(np.float64)
        model.intercept_ = float(tensors["intercept"][0])
        model.C_ = float(metadata["C"])  # type: ignore[arg-type]
        return model


# --- LightGBM ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LightGBMOptions:
    """Options of :class:`LightGBMChurn`.

    Attributes:
        learning_rate: shrinkage per tree.
        num_leaves_grid: leaf counts tried; the best by inner-validation ROC AUC is kept.
        max_rounds: most trees; early stopping on the inner split picks the number.
        early_stopping_rounds: patience of the early stopping.
        inner_valid_fraction: share of the training data held out for the inner split.
        min_child_samples, feature_fraction, bagging_fraction, lambda_l2: usual LightGBM regularisation.
        random_state: seed of the inner split and of LightGBM.
        n_jobs: LightGBM threads. One by default: on a small shared machine, OpenMP threads waiting for a
            busy core made training five times slower than a single thread.
    """

    learning_rate: float = 0.05
    num_leaves_grid: tuple[int, ...] = (7, 31, 63)
    max_rounds: int = 2000
    early_stopping_rounds: int = 100
    inner_valid_fraction: float = 0.2
    min_child_samples: int = 20
    feature_fraction: float = 0.8
    bagging_fraction: float = 0.8
    lambda_l2: float = 1.0
    max_categories: int = 200
    random_state: int = 0
    n_jobs: int = 1

    def __post_init__(self) -> None:
        if not self.num_leaves_grid or any(int(leaves) < 2 for leaves in self.num_leaves_grid):
            raise ValueError(f"num_leaves_grid must hold leaf counts of at least 2, got {self.num_leaves_grid!r}")
        if not 0.0 < self.inner_valid_fraction < 1.0:
            raise ValueError(f"inner_valid_fraction must be in (0, 1), got {self.inner_valid_fraction}")
        if self.max_rounds < 1 or self.early_stopping_rounds < 1:
            raise ValueError(
                f"max_rounds and early_stopping_rounds must be at least 1, got {self.max_rounds} and "
                f"{self.early_stopping_rounds}"
            )
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")


def _lightgbm_names(columns: Sequence[str]) -> list[str]:
    """The columns' names as LightGBM takes them: it refuses JSON's special characters in a feature name (a profile
    file's ``Charges [USD]``, an attribute ``plan: type``) and would put underscores for whitespace itself. Each
    such character becomes an underscore, and a name that then repeats an earlier one is numbered. LightGBM reads
    columns by position, so only the booster's own file shows these names."""
    names: list[str] = []
    used: set[str] = set()
    for column in columns:
        name = candidate = re.sub(r'[",:\[\]{}\s]', "_", str(column))
        number = 1
        while candidate in used:
            number += 1
            candidate = f"{name}__{number}"
        used.add(candidate)
        names.append(candidate)
    return names


class LightGBMChurn:
    kind = "lightgbm"
    MODEL_FILE = "lightgbm_model.txt"

    def __init__(self, options: LightGBMOptions | None = None) -> None:
        self.options = options or LightGBMOptions()
        self.booster_: object | None = None
        self.columns_: list[str] = []
        self.categories_: dict[str, list[str]] = {}
        self.params_: dict[str, object] = {}
        self.best_rounds_: int = 0

    def _params(self, num_leaves: int) -> dict[str, object]:
        o = self.options
        return {
            "objective": "binary",
            "learning_rate": o.learning_rate,
            "num_leaves": num_leaves,
            "min_child_samples": o.min_child_samples,
            "feature_fraction": o.feature_fraction,
            "bagging_fraction": o.bagging_fraction,
            "bagging_freq": 1,
            "lambda_l2": o.lambda_l2,
            "seed": o.random_state,
            "deterministic": True,
            "force_col_wise": True,
            "num_threads": o.n_jobs,
            "verbose": -1,
        }

    def _matrix(self, frame: pd.DataFrame) -> pd.DataFrame:
        frame = with_string_columns(frame)
        missing = [c for c in self.columns_ if c not in frame.columns]
        if missing:
            raise ValueError(f"columns missing from the data: {', '.join(missing)}")
        out = {}
        for column in self.columns_:
            if column in self.categories_:
                codes = {value: float(i) for i, value in enumerate(self.categories_[column])}
                out[column] = frame[column].map(lambda v, codes=codes: codes.get(str(v), math.nan)).astype(float)
            else:
                out[column] = frame[column].astype(float)
        matrix = pd.DataFrame(out, index=frame.index, columns=self.columns_)
        matrix.columns = _lightgbm_names(self.columns_)
        return matrix

    def fit(
        self, frame: pd.DataFrame, y: Sequence[int] | np.ndarray, *, groups: Sequence[object] | None = None
    ) -> LightGBMChurn:
        """Fit; ``groups`` (one customer id per row) keeps each customer on one side of the split that picks the
        leaves and the number of trees."""
        import lightgbm as lgb

        from ml.metrics import roc_auc

        labels = _as_binary(y)
        o = self.options
        frame = with_string_columns(frame)
        self.columns_ = list(frame.columns)
        self.categories_ = {}
        for column in self.columns_:
            if not _is_numeric(frame[column]):
                values = frame[column].dropna().astype(str)
                counts = values.value_counts()
                self.categories_[column] = sorted(
                    sorted(counts.index, key=lambda v: (-counts[v], v))[: o.max_categories]
                )
        counts = np.bincount(labels, minlength=2)
        held_out = math.ceil(o.inner_valid_fraction * len(labels))
        if counts.min() < 2 or held_out < 2 or len(labels) - held_out < 2:
            raise ValueError(
                f"LightGBM needs at least 2 churners and 2 non-churners, and 4 rows for its inner split (it holds "
                f"{o.inner_valid_fraction:.0%} out to choose its trees); got {counts.tolist()} (non-churners, churners)"
            )
        x = self._matrix(frame)
        categorical = [name for c, name in zip(self.columns_, x.columns, strict=True) if c in self.categories_]
        inner_train, inner_valid = _inner_holdout(labels, o.inner_valid_fraction, seed=o.random_state, groups=groups)
        best: tuple[float, int, int] | None = None
        for leaves in o.num_leaves_grid:
            train_set = lgb.Dataset(
                x.iloc[inner_train], labels[inner_train], categorical_feature=categorical, free_raw_data=False
            )
            valid_set = lgb.Dataset(x.iloc[inner_valid], labels[inner_valid], reference=train_set)
            booster = lgb.train(
                self._params(leaves),
                train_set,
                num_boost_round=o.max_rounds,
                valid_sets=[valid_set],
                callbacks=[lgb.early_stopping(o.early_stopping_rounds, verbose=False)],
            )
            rounds = max(1, booster.best_iteration or o.max_rounds)
            score = roc_auc(labels[inner_valid], booster.predict(x.iloc[inner_valid], num_iteration=rounds))
            if best is None or score > best[0]:
                best = (score, leaves, rounds)
        assert best is not None  # the options refuse an empty grid
        _, leaves, rounds = best
        # Refit on the whole training data with the chosen leaves and a tree count scaled to its larger size.
        self.best_rounds_ = max(1, round(rounds / (1 - o.inner_valid_fraction)))
        self.params_ = self._params(leaves)
        full = lgb.Dataset(x, labels, categorical_feature=categorical)
        self.booster_ = lgb.train(self.params_, full, num_boost_round=self.best_rounds_)
        return self

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        _check_fitted(self, "booster_")
        if len(frame) == 0:
            return np.zeros((0, 2))
        return _two_columns(self.booster_.predict(self._matrix(frame)))  # type: ignore[union-attr]

    def feature_importances(self) -> dict[str, float]:
        """Total gain per input column."""
        _check_fitted(self, "booster_")
        gains = self.booster_.feature_importance(importance_type="gain")  # type: ignore[union-attr]
        return dict(zip(self.columns_, map(float, gains), strict=True))

    def save(self, path: str | Path) -> Path:
        _check_fitted(self, "booster_")
        return save_artifact(
            path,
            tensors={},
            metadata={
                "kind": self.kind,
                "options": asdict(self.options),
                "columns": self.columns_,
                "categories": self.categories_,
                "params": self.params_,
                "best_rounds": self.best_rounds_,
            },
            extra_files={self.MODEL_FILE: self.booster_.model_to_string()},  # type: ignore[union-attr]
        )

    @classmethod
    @artifact_loader
    def load(cls, path: str | Path) -> LightGBMChurn:
        import lightgbm as lgb

        _, metadata, files = _load_checked(path, cls.kind)
        if cls.MODEL_FILE not in files:
            raise ArtifactError(f"model artifact {path} has no {cls.MODEL_FILE}")
        options = dict(metadata["options"])  # type: ignore[arg-type]
        options["num_leaves_grid"] = tuple(options["num_leaves_grid"])
        model = cls(LightGBMOptions(**options))
        model.columns_ = list(metadata["columns"])  # type: ignore[arg-type]
        model.categories_ = {str(k): list(v) for k, v in dict(metadata["categories"]).items()}  # type: ignore[arg-type]
        model.params_ = dict(metadata["params"])  # type: ignore[arg-type]
        model.best_rounds_ = int(metadata["best_rounds"])  # type: ignore[arg-type]
        model.booster_ = lgb.Booster(model_str=files[cls.MODEL_FILE].decode("utf-8"))
        return model
