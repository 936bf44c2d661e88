"""Baseline estimators: they learn, they round-trip through safe artifacts, they refuse what does not fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml.artifacts import ArtifactError
from ml.baselines import (
    LightGBMChurn,
    LightGBMOptions,
    LogisticRegressionChurn,
    LogisticRegressionOptions,
    ModelNotApplicable,
    RecencyRule,
    TabularEncoder,
    find_recency_column,
)
from ml.hybrid import HybridChurnModel, HybridConfig
from ml.metrics import roc_auc

FAST_LGBM = LightGBMOptions(max_rounds=60, early_stopping_rounds=10, num_leaves_grid=(7,), n_jobs=1)


def churn_table(n: int = 400, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Churn rises with idle days and the 'basic' plan; 10% of spend values are missing."""
    rng = np.random.default_rng(seed)
    days = rng.exponential(30, n)
    plan = rng.choice(["basic", "plus", "pro"], n)
    spend = rng.normal(100, 30, n)
    spend[rng.random(n) < 0.1] = np.nan
    logit = -2 + 0.05 * days + 1.5 * (plan == "basic")
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    frame = pd.DataFrame({"days_since_last_order": days, "plan": pd.Series(plan, dtype=object), "spend": spend})
    return frame, y


@pytest.mark.parametrize(
    "make",
    [RecencyRule, lambda: LogisticRegressionChurn(), lambda: LightGBMChurn(FAST_LGBM)],
    ids=["recency", "logreg", "lightgbm"],
)
def test_model_learns_and_round_trips_to_identical_probabilities(make, tmp_path: Path) -> None:
    frame, y = churn_table()
    test_frame, test_y = churn_table(seed=1)
    model = make().fit(frame, y)
    probabilities = model.predict_proba(test_frame)
    assert probabilities.shape == (len(test_y), 2)
    assert np.allclose(probabilities.sum(axis=1), 1.0)
    assert roc_auc(test_y, probabilities[:, 1]) > 0.7
    model.save(tmp_path / "model")
    assert not list((tmp_path / "model").glob("*.pkl"))
    loaded = type(model).load(tmp_path / "model")
    assert np.array_equal(loaded.predict_proba(test_frame), probabilities)


def test_recency_rule_ranks_by_idle_days() -> None:
    frame, y = churn_table()
    rule = RecencyRule().fit(frame, y)
    churn = rule.predict_proba(frame)[:, 1]
    order = np.argsort(frame["days_since_last_order"].to_numpy())
    assert np.all(np.diff(churn[order]) >= 0)


def test_recency_rule_does_not_apply_without_an_activity_time_column() -> None:
    frame, y = churn_table()
    with pytest.raises(ModelNotApplicable, match="days-since-last-activity"):
        RecencyRule().fit(frame.drop(columns=["days_since_last_order"]), y)


def test_recency_column_found_by_name() -> None:
    assert find_recency_column(["Tenure", "DaySinceLastOrder"]) == "DaySinceLastOrder"
    assert find_recency_column(["Tenure", "Complain"]) is None


def test_encoder_handles_missing_and_unseen_categories() -> None:
    train = pd.DataFrame({"x": [1.0, np.nan, 3.0], "c": pd.Series(["a", "b", None], dtype=object)})
    encoder = TabularEncoder().fit(train)
    assert encoder.feature_names_ == ["x", "x is missing", "c = (missing)", "c = a", "c = b"]
    row = encoder.transform(pd.DataFrame({"x": [np.nan], "c": pd.Series(["zzz"], dtype=object)}))
    assert row.tolist() == [[0.0, 1.0, 0.0, 0.0, 0.0]], "median-imputed and standardised to 0, unseen -> zeros"
    assert TabularEncoder.from_json(encoder.to_json()).transform(train).tolist() == encoder.transform(train).tolist()


def test_logistic_regression_picks_c_inside_the_training_data() -> None:
    frame, y = churn_table()
    model = LogisticRegressionChurn(LogisticRegressionOptions(C_grid=(0.001, 1.0))).fit(frame, y)
    assert model.C_ in (0.001, 1.0)
    assert "plan = basic" in model.coefficients() and model.coefficients()["plan = basic"] > 0


def test_loading_the_wrong_kind_of_model_is_refused(tmp_path: Path) -> None:
    frame, y = churn_table()
    LogisticRegressionChurn().fit(frame, y).save(tmp_path / "logreg")
    with pytest.raises(ArtifactError, match="holds a 'logreg' model, not 'lightgbm'"):
        LightGBMChurn.load(tmp_path / "logreg")


def test_single_class_training_data_is_refused() -> None:
    frame, _ = churn_table(20)
    with pytest.raises(ValueError, match="single class"):
        LogisticRegressionChurn().fit(frame, np.zeros(20, dtype=int))


def test_models_take_frames_whose_column_names_are_not_strings() -> None:
    rng = np.random.default_rng(0)
    y = np.array([0, 1] * 30)
    frame = pd.DataFrame({0: rng.normal(y), 1: rng.normal(size=60)})
    lightgbm = LightGBMOptions(num_leaves_grid=(7,), max_rounds=40, early_stopping_rounds=10, min_child_samples=5)
    named = frame.rename(columns=str)
    for make in (lambda: LightGBMChurn(lightgbm), LogisticRegressionChurn):
        np.testing.assert_array_equal(
            make().fit(frame, y).predict_proba(frame), make().fit(named, y).predict_proba(named)
        )
    hybrid = HybridChurnModel(HybridConfig(text_mode="none", inner_folds=3, lightgbm=lightgbm)).fit(frame, None, y)
    assert hybrid.columns_ == ["0", "1"] and hybrid.predict_proba(frame).shape == (60, 2)
    with pytest.raises(ValueError, match="clash once written as text"):
        LightGBMChurn(lightgbm).fit(pd.concat([frame, named], axis=1), y)


def _signal(n: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.tile([0, 1], n // 2)
    return pd.DataFrame({"x": rng.normal(size=n) + y, "z": rng.normal(size=n)}), y


def test_lightgbm_fits_columns_whose_names_hold_json_characters() -> None:
    # A profile file keeps its headers; LightGBM refuses '"', ',', ':', '[', ']', '{' and '}' in a feature name.
    frame, y = _signal(80)
    frame = frame.rename(columns={"x": "Charges [USD]", "z": "Plan: type"}).assign(**{"Plan_ type": ["a", "b"] * 40})
    model = LightGBMChurn(FAST_LGBM).fit(frame, y)
    assert model.columns_ == ["Charges [USD]", "Plan: type", "Plan_ type"]
    assert model.booster_.feature_name() == ["Charges__USD_", "Plan__type", "Plan__type__2"]
    assert roc_auc(y, model.predict_proba(frame)[:, 1]) > 0.7
    assert list(model.feature_importances()) == model.columns_


def test_lightgbm_and_logistic_regression_fit_the_grouped_rows_of_fewer_customers_than_inner_folds(
    tmp_path: Path,
) -> None:
    frame, y = _signal(40)
    customers = [f"c{i // 10}" for i in range(40)]  # 4 customers, 10 rows each: 5 grouped folds cannot be filled
    LightGBMChurn(FAST_LGBM).fit(frame, y, groups=customers)
    LogisticRegressionChurn(LogisticRegressionOptions(C_grid=(0.1, 1.0))).fit(frame, y, groups=customers)
    # One customer's rows have no split that keeps the customer whole: they are split as rows.
    LightGBMChurn(FAST_LGBM).fit(frame, y, groups=["c0"] * 40)


def test_lightgbm_scores_an_empty_batch_to_an_empty_result() -> None:
    frame, y = _signal(60)
    assert LightGBMChurn(FAST_LGBM).fit(frame, y).predict_proba(frame.iloc[:0]).shape == (0, 2)


@pytest.mark.parametrize(
    "options",
    [
        {"num_leaves_grid": ()},
        {"num_leaves_grid": (7, 1)},
        {"inner_valid_fraction": 0.0},
        {"inner_valid_fraction": 1.0},
        {"max_rounds": 0},
        {"early_stopping_rounds": 0},
        {"learning_rate": 0.0},
    ],
)
def test_lightgbm_options_refuse_settings_that_cannot_train(options: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        LightGBMOptions(**options)  # an empty grid ended in a bare AssertionError at fit
