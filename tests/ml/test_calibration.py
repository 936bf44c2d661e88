from __future__ import annotations

import json

import numpy as np
import pytest

from ml.calibration import CalibrationConfig, Calibrator
from ml.metrics import brier_score


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p / (1 - p))


def _sample(n: int, true_probability, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    rng = np.random.default_rng(seed)
    scores = rng.uniform(0.02, 0.98, n)
    return scores, (rng.uniform(size=n) < true_probability(scores)).astype(int)


def test_platt_recovers_the_slope_and_intercept_of_a_sigmoid_miscalibration() -> None:
    scores, y = _sample(20000, lambda s: _sigmoid(2.0 * _logit(s) + 0.5))

    calibrator = Calibrator(CalibrationConfig(method="platt")).fit(scores, y)

    a, b = calibrator.platt_
    assert a == pytest.approx(2.0, abs=0.1) and b == pytest.approx(0.5, abs=0.1)


def test_auto_picks_isotonic_for_a_step_shaped_truth_and_it_has_the_lower_cross_validated_brier() -> None:
    scores, y = _sample(4000, lambda s: np.where(s < 0.5, 0.05, 0.95))

    calibrator = Calibrator().fit(scores, y)

    assert calibrator.method_ == "isotonic"
    assert calibrator.cv_brier_["isotonic"] < calibrator.cv_brier_["platt"]


def test_auto_never_considers_isotonic_on_tiny_held_out_sets() -> None:
    scores, y = _sample(60, lambda s: np.where(s < 0.5, 0.05, 0.95))

    calibrator = Calibrator().fit(scores, y)

    assert calibrator.method_ == "platt" and set(calibrator.cv_brier_) == {"platt"}


def test_calibration_fitted_on_held_out_scores_improves_brier_on_new_data() -> None:
    truth = lambda s: s**3  # noqa: E731 - an over-confident model: scores far above the real churn rate
    scores, y = _sample(5000, truth, seed=1)
    new_scores, new_y = _sample(5000, truth, seed=2)

    calibrated = Calibrator().fit(scores, y).transform(new_scores)

    assert brier_score(new_y, calibrated) < brier_score(new_y, new_scores) - 0.02


@pytest.mark.parametrize("method", ["platt", "isotonic", "none"])
def test_json_state_round_trips_to_identical_probabilities(method: str) -> None:
    scores, y = _sample(500, lambda s: s**2)
    calibrator = Calibrator(CalibrationConfig(method=method)).fit(scores, y)

    state = json.loads(json.dumps(calibrator.to_json()))
    reloaded = Calibrator.from_json(state)

    np.testing.assert_array_equal(reloaded.transform(scores), calibrator.transform(scores))
    assert reloaded.method_ == method


def test_isotonic_output_is_monotone_and_within_zero_one_outside_the_training_range() -> None:
    scores, y = _sample(2000, lambda s: s)
    calibrator = Calibrator(CalibrationConfig(method="isotonic")).fit(scores, y)

    probabilities = calibrator.transform(np.linspace(-0.5, 1.5, 201))

    assert np.all(np.diff(probabilities) >= 0) and probabilities.min() >= 0 and probabilities.max() <= 1


def test_isotonic_keeps_the_models_order_inside_a_step_and_moves_probabilities_by_at_most_a_millionth() -> None:
    from sklearn.isotonic import IsotonicRegression

    from ml.metrics import roc_auc

    scores, y = _sample(3000, lambda s: s**2, seed=3)
    calibrator = Calibrator(CalibrationConfig(method="isotonic")).fit(scores, y)
    step_function = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(scores, y).predict(scores)

    probabilities = calibrator.transform(scores)

    assert len(np.unique(step_function)) < len(scores) / 10, "the plain isotonic fit should have wide steps"
    assert len(np.unique(probabilities)) == len(np.unique(scores))
    assert roc_auc(y, probabilities) == pytest.approx(roc_auc(y, scores), abs=1e-12)
    assert np.max(np.abs(probabilities - step_function)) <= 1e-6


def test_bad_input_is_refused_with_the_row_named() -> None:
    with pytest.raises(ValueError, match="row 2"):
        Calibrator().fit([0.1, 0.2, float("nan"), 0.4], [0, 1, 0, 1])
    with pytest.raises(ValueError, match="both churners and non-churners"):
        Calibrator().fit([0.1, 0.2, 0.3], [1, 1, 1])
    with pytest.raises(ValueError, match="calibration method"):
        CalibrationConfig(method="magic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="incomplete"):
        Calibrator.from_json({"config": {}, "method": "platt"})


@pytest.mark.parametrize("method", ["auto", "platt"])
def test_held_out_scores_without_spread_give_the_base_rate_not_a_reversed_map(method: str) -> None:
    # Out-of-fold scores are constant when no fold's LightGBM makes a split; the final model may still split.
    y = np.random.default_rng(0).integers(0, 2, 300)
    calibrator = Calibrator(CalibrationConfig(method=method)).fit(np.full(300, 0.3), y)

    out = calibrator.transform([0.1, 0.3, 0.5, 0.9])

    assert np.all(np.diff(out) >= 0), (calibrator.method_, out)
    if calibrator.method_ == "platt":
        assert calibrator.platt_[0] == 0.0 and np.allclose(out, y.mean())


@pytest.mark.parametrize(
    "state",
    [
        {"method": "platt", "a": float("nan"), "b": 0.0},
        {"method": "platt", "a": 1.0, "b": float("inf")},
        {"method": "isotonic", "thresholds_x": [0.9, 0.1, 0.5], "thresholds_y": [0.2, 0.8, 0.1]},
        {"method": "isotonic", "thresholds_x": [0.1, 0.9], "thresholds_y": [float("nan"), 0.5]},
        {"method": "isotonic", "thresholds_x": [0.1, 0.9], "thresholds_y": [0.2, 1.5]},
    ],
)
def test_a_saved_state_that_is_not_a_calibration_is_refused(state: dict) -> None:
    full = {"config": {"method": "auto", "folds": 5, "min_isotonic_rows": 100, "random_state": 0}, **state}
    with pytest.raises(ValueError, match="finite|rise"):
        Calibrator.from_json(full)
