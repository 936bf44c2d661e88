"""Metrics on small examples computed by hand."""

from __future__ import annotations

import math

import pytest

from ml.metrics import brier_score, churn_metrics, expected_calibration_error, lift_at, pr_auc, roc_auc

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
    assert lift_at(y, scores, 0.1) == pytest.approx((1 / 2) / 0.15)  # top 2: rows 0 and 1 (stable ties)
    assert lift_at(Y, P, 0.2) == pytest.approx(1 / 0.4)


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
