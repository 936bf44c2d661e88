"""Metrics on small examples computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ml.metrics import (
    brier_score,
    calibration_bins,
    churn_metrics,
    expected_calibration_error,
    lift_at,
    pr_auc,
    roc_auc,
    roc_curve_points,
)

Y = [1, 0, 1, 0, 0]
P = [0.9, 0.8, 0.4, 0.3, 0.1]


def test_roc_auc_counts_correctly_ordered_pairs() -> None:
    # Positive/negative pairs: (0.9 > 0.8, 0.3, 0.1) = 3, (0.4 > 0.3, 0.1) = 2 of 6 -> 5/6.
    assert roc_auc(Y, P) == pytest.approx(5 / 6)
    assert math.isnan(roc_auc([1, 1], [0.2, 0.3]))


def test_pr_auc_is_average_precision() -> None:
    # Positives at ranks 1 and 3: precision 1/1 and 2/3, mean = 5/6.
    assert pr_auc(Y, P) == pytest.approx((1 + 2 / 3) / 2)


def test_lift_in_the_top_decile_and_top_fifth() -> None:
    y = [1] + [0] * 9 + [1] * 2 + [0] * 8  # 20 customers, 3 churners, base rate 0.15
    scores = [1.0] + [0.9] * 9 + [0.1] * 10
    assert lift_at(y, scores, 0.1) == pytest.approx((1 / 2) / 0.15)  # top 2: row 0 and one of nine without churn
    assert lift_at(Y, P, 0.2) == pytest.approx(1 / 0.4)


def test_customers_tied_at_the_boundary_share_its_seats_whatever_the_row_order() -> None:
    y = np.array([1] * 10 + [0] * 90)
    assert lift_at(y, np.full(100, 0.3)) == pytest.approx(1.0)  # a score that tells nobody apart
    assert lift_at(y[::-1], np.full(100, 0.3)) == pytest.approx(1.0)
    # Two seats left for four tied customers, one of them a churner: half a churner expected.
    y = np.array([1, 0, 1, 0, 0, 0] + [0] * 14)
    scores = np.array([0.9, 0.5, 0.5, 0.5, 0.5, 0.9] + [0.1] * 14)
    assert lift_at(y, scores, 0.2) == pytest.approx((1 + 2 * 1 / 4) / 4 / 0.1)
    rng = np.random.default_rng(0)
    days = rng.integers(0, 5, 200).astype(float)  # whole days: many ties at the boundary
    churn = (rng.random(200) < 0.2).astype(int)
    lifts = {round(lift_at(churn[order], days[order]), 9) for order in (rng.permutation(200) for _ in range(20))}
    assert len(lifts) == 1, lifts


def test_brier_score() -> None:
    expected = (0.1**2 + 0.8**2 + 0.6**2 + 0.3**2 + 0.1**2) / 5
    assert brier_score(Y, P) == pytest.approx(expected)


def test_expected_calibration_error_by_hand() -> None:
    # Bins: [0.9] y=1 -> |0.9-1|; [0.8] y=0 -> 0.8; [0.4] y=1 -> 0.6; [0.3] y=0 -> 0.3; [0.1] y=0 -> 0.1.
    assert expected_calibration_error(Y, P) == pytest.approx((0.1 + 0.8 + 0.6 + 0.3 + 0.1) / 5)
    # Two in one bin: mean p 0.25 vs rate 0.5 -> 0.25, weight 1.
    assert expected_calibration_error([1, 0], [0.21, 0.29]) == pytest.approx(0.25)
    assert expected_calibration_error([1, 1], [1.0, 1.0]) == 0.0


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="2 labels but 3 scores"):
        roc_auc([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="0 or 1"):
        brier_score([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        expected_calibration_error([0, 1], [0.1, 1.2])


def test_churn_metrics_has_every_reported_name() -> None:
    assert set(churn_metrics(Y, P)) == {"roc_auc", "pr_auc", "lift_at_10", "brier", "ece"}


def test_roc_curve_points_by_hand() -> None:
    # Scores 0.9 (+), 0.8 (-), 0.4 (+), 0.3 (-), 0.1 (-): each threshold step moves up or right by one example.
    curve = roc_curve_points(Y, P)
    assert curve.fpr == pytest.approx((0, 0, 1 / 3, 1 / 3, 1)) and curve.tpr == pytest.approx((0, 0.5, 0.5, 1, 1))
    assert curve.area() == pytest.approx(roc_auc(Y, P)) and roc_curve_points([1, 1], [0.2, 0.3]) is None


def test_a_long_roc_curve_is_thinned_to_max_points_and_keeps_its_area() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 20_000)
    scores = y * 0.8 + rng.normal(size=y.size)
    curve = roc_curve_points(y, scores, max_points=100)
    assert len(curve.fpr) <= 100 and (curve.fpr[0], curve.tpr[0], curve.fpr[-1], curve.tpr[-1]) == (0, 0, 1, 1)
    assert all(np.diff(curve.fpr) >= 0) and all(np.diff(curve.tpr) >= 0)
    assert curve.area() == pytest.approx(roc_auc(y, scores), abs=0.01)


def test_calibration_bins_are_the_bins_of_the_ece() -> None:
    rng = np.random.default_rng(1)
    p = rng.uniform(size=3000) ** 2
    y = (rng.uniform(size=p.size) < np.sqrt(p)).astype(int)  # under-confident: observed above predicted
    bins = calibration_bins(y, p, n_bins=10)
    assert sum(b.count for b in bins) == p.size and [b.lower for b in bins] == pytest.approx(
        [i / 10 for i in range(10)]
    )
    weighted_gap = sum(b.count * abs(b.mean_predicted - b.observed_rate) for b in bins) / p.size
    assert weighted_gap == pytest.approx(expected_calibration_error(y, p))
    assert all(b.lower <= b.mean_predicted < b.upper for b in bins) and bins[1].observed_rate > bins[1].upper


def test_calibration_bins_leave_out_empty_bins_and_put_one_in_the_last() -> None:
    bins = calibration_bins([0, 1, 1], [0.05, 1.0, 0.95], n_bins=10)
    assert [b.count for b in bins] == [1, 2] and [b.lower for b in bins] == pytest.approx([0.0, 0.9])
    assert [b.observed_rate for b in bins] == [0.0, 1.0] and bins[1].mean_predicted == pytest.approx(0.975)


def test_labels_other_than_0_and_1_are_refused_before_they_are_read_as_integers() -> None:
    # A cast first read 0.4 as 0 and 1.7 as 1: scores passed as labels gave a plausible Brier score or ROC AUC.
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        brier_score([0.4, 0.9], [0.4, 0.9])
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        roc_auc([0.3, 0.6, 1.0], [0.1, 0.2, 0.3])
    assert brier_score(np.array([True, False]), [1.0, 0.0]) == 0.0
    assert roc_auc([0.0, 1.0], [0.2, 0.7]) == 1.0


def test_expected_calibration_error_refuses_a_bin_count_below_1() -> None:
    for n_bins in (0, -3):
        with pytest.raises(ValueError, match="n_bins must be at least 1"):
            expected_calibration_error([0, 1], [0.2, 0.7], n_bins=n_bins)
