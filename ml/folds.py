"""Stratified folds that keep each customer's rows together.

A model trained on rolling cutoffs sees the same customer several times, with nearly the same text and closely
related labels. Folds that split those rows would let a model score a row after training on that customer's
other rows, and the out-of-fold scores (stacking, model selection, calibration) would look better than they are.
With ``groups`` (one customer id per row) every customer's rows fall into one fold; with one row per customer,
or without groups, the folds are plain stratified folds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["stratified_folds", "stratified_holdout"]


def stratified_folds(
    labels: np.ndarray, n_splits: int, *, seed: int, groups: Sequence[object] | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(train_rows, held_out_rows)`` of ``n_splits`` stratified folds, customers kept whole when grouped.

    Raises:
        ValueError: fewer customers than folds.
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    labels = np.asarray(labels)
    placeholder = np.zeros(len(labels))
    if groups is not None:
        if len(groups) != len(labels):
            raise ValueError(f"{len(groups)} groups but {len(labels)} rows")
        codes = np.unique(np.asarray([str(g) for g in groups], dtype=object), return_inverse=True)[1]
        if codes.max(initial=-1) + 1 < len(labels):
            if codes.max() + 1 < n_splits:
                raise ValueError(f"{codes.max() + 1} customers cannot fill {n_splits} folds")
            splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
            return [(np.sort(a), np.sort(b)) for a, b in splitter.split(placeholder, labels, codes)]
    splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return list(splitter.split(placeholder, labels))


def stratified_holdout(
    labels: np.ndarray, fraction: float, *, seed: int, groups: Sequence[object] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(train_rows, held_out_rows)``: a stratified share of about ``fraction`` held out, customers kept whole
    when grouped (one fold of ``round(1 / fraction)`` grouped folds, or of one fold per customer when there are
    fewer customers than that: a larger share held out rather than a customer split); without repeated customers,
    exactly scikit-learn's ``train_test_split(stratify=labels)``.

    Raises:
        ValueError: grouped rows of a single customer (they cannot be split and kept whole).
    """
    from sklearn.model_selection import train_test_split

    labels = np.asarray(labels)
    if groups is not None and (customers := len({str(g) for g in groups})) < len(labels):
        if customers < 2:
            raise ValueError("the rows of a single customer cannot be split into training and held-out customers")
        folds = stratified_folds(labels, min(customers, max(2, round(1 / fraction))), seed=seed, groups=groups)
        return folds[0]
    train, held_out = train_test_split(np.arange(len(labels)), test_size=fraction, stratify=labels, random_state=seed)
    return train, held_out
