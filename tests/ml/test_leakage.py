"""Near-duplicate rows: found exactly, grouped transitively, judged against chance, and kept in one fold."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ml.evaluation import MODEL_REGISTRY, FoldData, cross_validate_profile, register_model
from ml.features import ProfileData, prepare_profile
from ml.leakage import MAX_MASKED_COLUMN_SETS, NearDuplicateSearchError, near_duplicates


def _brute_force_groups(frame: pd.DataFrame, max_differences: int) -> list[set[int]]:
    """Every pair compared cell by cell (missing equals missing); connected groups of two rows or more."""
    values = frame.to_numpy(dtype=object)
    n = len(values)
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    def same(a: object, b: object) -> bool:
        return (pd.isna(a) and pd.isna(b)) or (not pd.isna(a) and not pd.isna(b) and a == b)

    for i in range(n):
        for j in range(i + 1, n):
            if sum(not same(a, b) for a, b in zip(values[i], values[j], strict=True)) <= max_differences:
                parent[root(j)] = root(i)
    groups: dict[int, set[int]] = {}
    for i in range(n):
        groups.setdefault(root(i), set()).add(i)
    return sorted((g for g in groups.values() if len(g) > 1), key=min)


def _groups_of(labels: np.ndarray) -> list[set[int]]:
    groups: dict[int, set[int]] = {}
    for row, group in enumerate(labels.tolist()):
        groups.setdefault(group, set()).add(row)
    return sorted((g for g in groups.values() if len(g) > 1), key=min)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("max_differences", [0, 1, 2])
def test_groups_match_a_pairwise_comparison(seed: int, max_differences: int) -> None:
    rng = np.random.default_rng(seed)
    n = 60
    frame = pd.DataFrame(
        {
            "a": rng.choice(["x", "y", None], n),
            "b": rng.integers(0, 3, n).astype(float),
            "c": rng.choice([1.5, 2.5, np.nan], n),
            "d": rng.choice(["p", "q"], n),
            "e": rng.integers(0, 4, n).astype(float),
        }
    )
    found = near_duplicates(frame, max_differences=max_differences)
    expected = _brute_force_groups(frame, max_differences)
    assert _groups_of(found.groups) == expected
    assert found.rows_in_groups == sum(len(g) for g in expected)
    assert found.multi_row_groups == len(expected)


def test_a_copy_of_a_copy_joins_the_original_s_group_and_one_more_change_does_not() -> None:
    frame = pd.DataFrame(
        {
            "tenure": [4.0, 4.0, 4.0, 9.0],
            "coupons": [1.0, 0.0, 0.0, 0.0],
            "status": ["Single", "Single", "Married", "Married"],
            "city": ["1", "1", "1", "1"],
        }
    )
    # 0-1 differ in coupons, 1-2 in status: one group; 3 differs from 2 in tenure too, but only 1 column: joins.
    assert _groups_of(near_duplicates(frame, max_differences=1).groups) == [{0, 1, 2, 3}]
    frame.loc[3, "city"] = "2"  # now two columns from row 2, three from row 1
    assert _groups_of(near_duplicates(frame, max_differences=1).groups) == [{0, 1, 2}]
    assert _groups_of(near_duplicates(frame, max_differences=0).groups) == []


def test_altered_copies_read_as_suspicious_and_similar_customers_do_not() -> None:
    rng = np.random.default_rng(3)
    n = 400
    originals = pd.DataFrame({f"f{i}": rng.integers(0, 1000, n).astype(float) for i in range(8)})
    y = (rng.random(n) < 0.3).astype(int)
    copies = originals.copy()
    copies["f2"] = rng.integers(0, 1000, n).astype(float)  # one cell changed per copy
    table = pd.concat([originals, copies], ignore_index=True)
    found = near_duplicates(table, np.concatenate([y, y]), max_differences=1)
    assert found.rows_in_groups == 2 * n and found.label_pure_share == 1.0
    rate = y.mean()
    assert found.chance_pure_share == pytest.approx(rate**2 + (1 - rate) ** 2)
    assert found.suspicious and "altered copies" in found.note()
    # The same rows with labels drawn afresh for the copies: groups are no purer than chance.
    unrelated = np.concatenate([y, (rng.random(n) < 0.3).astype(int)])
    honest = near_duplicates(table, unrelated, max_differences=1)
    assert honest.label_pure_share < 0.7 and not honest.suspicious
    assert "altered copies" not in honest.note()
    summary = json.loads(json.dumps(honest.summary()))
    assert summary["rows_in_groups"] == 2 * n and summary["suspicious"] is False


def test_without_labels_or_groups_the_shares_are_not_numbers_and_the_note_says_nothing_was_found() -> None:
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": ["x", "y", "z"], "c": [0.0, 0.0, 1.0]})
    found = near_duplicates(frame, np.array([0, 1, 0]), max_differences=1)
    assert found.rows_in_groups == 0 and not found.suspicious
    assert "no row equals another" in found.note()
    assert found.summary()["label_pure_share"] is None


def test_tables_that_do_not_suit_the_search_are_refused_in_plain_words() -> None:
    frame = pd.DataFrame({"a": [1.0, 1.0], "b": [2.0, 3.0]})
    with pytest.raises(NearDuplicateSearchError, match="fewer than 2 to compare"):
        near_duplicates(frame, max_differences=1)
    with pytest.raises(ValueError, match="0 or more"):
        near_duplicates(frame, max_differences=-1)
    wide = pd.DataFrame(np.zeros((2, 70)))
    with pytest.raises(NearDuplicateSearchError, match=f"at most {MAX_MASKED_COLUMN_SETS}"):
        near_duplicates(wide, max_differences=2)
    with pytest.raises(ValueError, match="3 labels for 2 rows"):
        near_duplicates(
            pd.DataFrame({"a": [1.0, 1.0], "b": [1.0, 1.0], "c": [0.0, 1.0]}), np.zeros(3), max_differences=1
        )


def _copied_profile(n: int = 150, seed: int = 0):  # noqa: ANN202 - ProfileData
    rng = np.random.default_rng(seed)
    raw = pd.DataFrame({name: rng.integers(0, 5000, n).astype(str) for name in ("tenure", "spend", "visits", "age")})
    raw["plan"] = rng.choice(["a", "b", "c"], n)
    raw["coupons"] = rng.integers(0, 3, n).astype(str)
    raw["Churn"] = np.where(rng.random(n) < 0.3, "Yes", "No")
    copies = raw.copy()
    copies["coupons"] = rng.integers(3, 6, n).astype(str)
    table = pd.concat([raw, copies], ignore_index=True)
    table.insert(0, "id", [f"c{i}" for i in range(len(table))])
    return prepare_profile(table, label_col="Churn", positive="Yes", id_col="id", name="copied")


class _FoldSpy:
    """Records which rows each fold trained on, and scores at random."""

    folds: list[tuple[list[str], list[str]]] = []

    def __init__(self, train: FoldData) -> None:
        self.train_ids = list(train.ids)
        self.train_groups = train.groups

    def predict_proba(self, data: FoldData) -> np.ndarray:
        _FoldSpy.folds.append((self.train_ids, list(data.ids)))
        churn = np.random.default_rng(len(data.ids)).random(len(data.ids))
        return np.column_stack([1 - churn, churn])


def test_the_evaluation_reports_near_duplicates_and_keeps_each_group_in_one_fold_when_asked() -> None:
    data = _copied_profile()
    register_model("spy", _FoldSpy)
    try:
        _FoldSpy.folds = []
        plain = cross_validate_profile(data, models=["spy"], folds=5, progress=False)
        split_pairs = sum(
            1 for train, test in _FoldSpy.folds for i in test if f"c{(int(i[1:]) + 150) % 300}" in set(train)
        )
        _FoldSpy.folds = []
        grouped = cross_validate_profile(data, models=["spy"], folds=5, progress=False, group_near_duplicates=True)
        grouped_split_pairs = sum(
            1 for train, test in _FoldSpy.folds for i in test if f"c{(int(i[1:]) + 150) % 300}" in set(train)
        )
    finally:
        MODEL_REGISTRY.pop("spy")
    assert split_pairs > 200  # plain folds put most copies on the other side of their original
    assert grouped_split_pairs == 0
    assert plain.protocol.startswith("stratified 5-fold CV") and "group" in grouped.protocol
    assert any("altered copies" in note for note in plain.notes)
    assert plain.extra["near_duplicates"]["rows_in_groups"] == 300
    assert json.loads(json.dumps(plain.to_json()))["near_duplicates"]["suspicious"] is True


def test_grouped_folds_reach_the_inner_splits_of_the_models() -> None:
    data = _copied_profile()
    seen: list[list[str] | None] = []

    class _GroupSpy(_FoldSpy):
        def __init__(self, train: FoldData) -> None:
            super().__init__(train)
            seen.append(train.groups)

    register_model("group_spy", _GroupSpy)
    try:
        cross_validate_profile(data, models=["group_spy"], folds=3, progress=False)
        cross_validate_profile(data, models=["group_spy"], folds=3, progress=False, group_near_duplicates=True)
    finally:
        MODEL_REGISTRY.pop("group_spy")
    assert seen[:3] == [None, None, None]
    for groups in seen[3:]:
        assert groups is not None and len(set(groups)) < len(groups)


def test_a_table_too_narrow_to_search_is_noted_not_refused_unless_grouping_was_asked_for() -> None:
    raw = pd.DataFrame({"id": [f"c{i}" for i in range(40)], "tenure": [str(i % 7) for i in range(40)]})
    raw["Churn"] = ["Yes" if i % 3 == 0 else "No" for i in range(40)]
    data = prepare_profile(raw, label_col="Churn", positive="Yes", id_col="id")
    report = cross_validate_profile(data, models=["logreg"], folds=3, progress=False)
    assert any(note.startswith("near-duplicates: not looked for") for note in report.notes)
    with pytest.raises(NearDuplicateSearchError):
        cross_validate_profile(data, models=["logreg"], folds=3, progress=False, group_near_duplicates=True)
    quiet = cross_validate_profile(data, models=["logreg"], folds=3, progress=False, near_duplicate_columns=None)
    assert not any("near-duplicates" in note for note in quiet.notes) and "near_duplicates" not in quiet.extra


def test_empty_tables_and_repeated_column_names_are_searched_without_error() -> None:
    empty = near_duplicates(pd.DataFrame({"a": [], "b": [], "c": []}), np.zeros(0), max_differences=1)
    assert empty.rows_in_groups == 0 and empty.note() == "near-duplicates: no row equals another in all but 1 column"
    assert near_duplicates(pd.DataFrame({"a": [1.0], "b": [2.0]}), max_differences=0).note() == (
        "near-duplicates: no two rows are equal"
    )
    repeated = pd.DataFrame([[1, 2, 3], [1, 2, 4], [5, 2, 4]], columns=["a", "a", "b"])
    assert _groups_of(near_duplicates(repeated, max_differences=1).groups) == [{0, 1, 2}]
    assert _groups_of(near_duplicates(repeated, max_differences=0).groups) == []


def test_grouped_folds_that_leave_a_test_fold_without_churners_are_refused_not_averaged_away() -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({c: rng.normal(size=100) for c in "abcd"})
    y = np.zeros(100, dtype=int)
    for group, rows in enumerate([range(0, 5), range(5, 10)]):  # all ten churners in two near-duplicate groups
        frame.loc[list(rows), ["a", "b", "c"]] = [10 + group, 20 + group, 30 + group]
        y[list(rows)] = 1
    data = ProfileData(name="x", frame=frame, y=y, ids=[str(i) for i in range(100)], notes=())

    with pytest.raises(ValueError, match=r"test fold \d of 5 has 0 churners and \d+ non-churners: nothing to measure"):
        cross_validate_profile(data, models=["logreg"], progress=False, group_near_duplicates=True)
    assert cross_validate_profile(data, models=["logreg"], progress=False).per_fold["logreg"][0]["roc_auc"] >= 0


def test_the_note_without_labels_leaves_the_label_share_out() -> None:
    frame = pd.DataFrame({"a": [1, 1, 2], "b": [1, 1, 1], "c": [2, 2, 2]})
    report = near_duplicates(frame, None, max_differences=0)
    assert report.rows_in_groups == 2
    assert "nan" not in report.note() and "label" not in report.note()
    assert "2 of 3 rows" in report.note()
