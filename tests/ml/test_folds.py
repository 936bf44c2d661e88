from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import StratifiedKFold, train_test_split

from ml.folds import stratified_folds, stratified_holdout

LABELS = np.array([0, 0, 1, 0, 1, 0, 0, 1, 0, 0] * 6)
CUSTOMERS = [f"c{i // 3}" for i in range(60)]  # each customer at three cutoffs


def test_grouped_folds_keep_each_customers_rows_together_and_cover_every_row_once() -> None:
    folds = stratified_folds(LABELS, 4, seed=0, groups=CUSTOMERS)

    assert sorted(np.concatenate([held for _, held in folds]).tolist()) == list(range(60))
    for train, held in folds:
        assert {CUSTOMERS[i] for i in train}.isdisjoint(CUSTOMERS[i] for i in held)
        assert set(LABELS[held]) == {0, 1}


def test_without_repeated_customers_the_splits_are_scikit_learns_own() -> None:
    expected = list(StratifiedKFold(4, shuffle=True, random_state=3).split(np.zeros(60), LABELS))
    for groups in (None, [f"c{i}" for i in range(60)]):
        found = stratified_folds(LABELS, 4, seed=3, groups=groups)
        assert all(
            np.array_equal(a, c) and np.array_equal(b, d) for (a, b), (c, d) in zip(found, expected, strict=True)
        )
        train, held = stratified_holdout(LABELS, 0.2, seed=3, groups=groups)
        expected_train, expected_held = train_test_split(np.arange(60), test_size=0.2, stratify=LABELS, random_state=3)
        assert np.array_equal(train, expected_train) and np.array_equal(held, expected_held)


def test_a_grouped_holdout_takes_whole_customers_and_about_the_share_asked() -> None:
    train, held = stratified_holdout(LABELS, 0.2, seed=0, groups=CUSTOMERS)

    assert {CUSTOMERS[i] for i in train}.isdisjoint(CUSTOMERS[i] for i in held)
    assert len(train) + len(held) == 60 and 9 <= len(held) <= 15
    with pytest.raises(ValueError, match="3 customers cannot fill 4 folds"):
        stratified_folds(LABELS[:9], 4, seed=0, groups=CUSTOMERS[:9])


def test_a_grouped_holdout_with_fewer_customers_than_folds_holds_out_whole_customers() -> None:
    labels = np.tile([0, 1], 20)
    customers = [f"c{i // 10}" for i in range(40)]  # 4 customers: round(1 / 0.2) = 5 folds cannot be filled
    train, held_out = stratified_holdout(labels, 0.2, seed=0, groups=customers)
    assert len(train) + len(held_out) == 40 and len(held_out) == 10  # one customer of four
    assert not {customers[i] for i in train} & {customers[i] for i in held_out}
    with pytest.raises(ValueError, match="single customer"):
        stratified_holdout(labels, 0.2, seed=0, groups=["c0"] * 40)
