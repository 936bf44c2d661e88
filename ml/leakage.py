"""Near-duplicate rows: a leak that dropping exact duplicates does not close.

Some public churn tables were enlarged by copying rows and changing one or two cells (a coupon count, a marital
status). Cross-validation that puts one copy in training and another in the test fold measures how well a model
remembers the copy, not how well it predicts a new customer. :func:`near_duplicates` finds rows equal to another
row in all but ``max_differences`` feature columns (missing equals missing), joins them into groups (a copy of a
copy joins its original's group) and compares how often a group's rows share one label with what chance gives.

The search is exact and costs one grouping pass per set of masked columns, ``sum(C(d, k) for k <= max_differences)``
passes for ``d`` columns (172 for 18 columns and ``max_differences=2``); no pair of rows is ever compared directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd

__all__ = ["MAX_MASKED_COLUMN_SETS", "NearDuplicateReport", "NearDuplicateSearchError", "near_duplicates"]

# More column sets than this make the search slow (40 columns at max_differences=3 need 10,701 passes).
MAX_MASKED_COLUMN_SETS = 2000
# Groups whose labels disagree at most this fraction as often as chance would have them, holding at least this
# share of the rows, read as altered copies. Similar but distinct customers share a label more often than chance
# too (that is what a model learns from), but not nearly always: Telco's groups at two columns are 53% pure
# against 29% by chance; the e-commerce table's are 100% pure against 72%.
SUSPICIOUS_IMPURITY_RATIO = 0.2
SUSPICIOUS_MIN_SHARE = 0.05


class NearDuplicateSearchError(ValueError):
    """The table does not suit the search: too few columns to compare, or too many passes to make."""


@dataclass(frozen=True)
class NearDuplicateReport:
    """What :func:`near_duplicates` found.

    Attributes:
        max_differences: columns in which two rows may differ and still count as near-duplicates.
        n_rows, n_columns: the table searched.
        groups: one group number per row; rows of one group are linked by near-duplicate pairs.
        rows_in_groups: rows that have at least one near-duplicate.
        multi_row_groups: groups of two rows or more.
        label_pure_share: share of those rows whose whole group carries one label.
        chance_pure_share: the same share expected if labels were drawn at random at the base rate
            (a group of ``m`` rows is pure with probability ``p**m + (1 - p)**m``).
    """

    max_differences: int
    n_rows: int
    n_columns: int
    groups: np.ndarray
    rows_in_groups: int
    multi_row_groups: int
    label_pure_share: float
    chance_pure_share: float

    @property
    def share_in_groups(self) -> float:
        return self.rows_in_groups / self.n_rows if self.n_rows else 0.0

    @property
    def suspicious(self) -> bool:
        """Enough rows in groups whose labels almost never disagree (far less often than chance): altered copies."""
        if not self.share_in_groups >= SUSPICIOUS_MIN_SHARE or not math.isfinite(self.label_pure_share):
            return False
        chance_impurity = 1.0 - self.chance_pure_share
        return chance_impurity > 0 and 1.0 - self.label_pure_share <= SUSPICIOUS_IMPURITY_RATIO * chance_impurity

    def summary(self) -> dict[str, object]:
        return {
            "max_differences": self.max_differences,
            "rows": self.n_rows,
            "columns": self.n_columns,
            "rows_in_groups": self.rows_in_groups,
            "multi_row_groups": self.multi_row_groups,
            "label_pure_share": _rounded(self.label_pure_share),
            "chance_pure_share": _rounded(self.chance_pure_share),
            "suspicious": self.suspicious,
        }

    def note(self) -> str:
        """One sentence for an evaluation report."""
        if not self.rows_in_groups:
            if self.max_differences == 0:
                return "near-duplicates: no two rows are equal"
            plural = "s" if self.max_differences > 1 else ""
            return f"near-duplicates: no row equals another in all but {self.max_differences} column{plural}"
        text = (
            f"near-duplicates: {self.rows_in_groups} of {self.n_rows} rows ({self.share_in_groups:.0%}) equal another "
            f"row in all but at most {self.max_differences} of {self.n_columns} columns ({self.multi_row_groups} groups)"
        )
        if math.isfinite(self.label_pure_share):  # not measured without labels
            text += (
                f"; {self.label_pure_share:.1%} of them share their group's label (chance: "
                f"{self.chance_pure_share:.1%})"
            )
        if self.suspicious:
            text += (
                ". They look like altered copies: folds that split them measure memory, not prediction; "
                "--group-near-duplicates keeps each group in one fold"
            )
        return text


def near_duplicates(
    frame: pd.DataFrame, y: np.ndarray | None = None, *, max_differences: int = 2
) -> NearDuplicateReport:
    """Group the rows of ``frame`` (feature columns only) that differ in at most ``max_differences`` columns.

    Args:
        frame: one row per customer; ids and labels left out.
        y: 0/1 labels for the label-purity figures (``None``: purity is not measured, both shares are NaN).
        max_differences: 0 finds exact duplicates only.

    Raises:
        ValueError: a negative ``max_differences``.
        NearDuplicateSearchError: fewer than two columns left to compare, or more than
            :data:`MAX_MASKED_COLUMN_SETS` passes needed.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n_rows, n_columns = frame.shape
    if y is not None and len(y) != n_rows:
        raise ValueError(f"{len(y)} labels for {n_rows} rows")
    if max_differences < 0:
        raise ValueError(f"max_differences must be 0 or more, not {max_differences}")
    if n_columns - max_differences < 2:
        raise NearDuplicateSearchError(
            f"{n_columns} columns leave fewer than 2 to compare when {max_differences} may differ; "
            "use a smaller max_differences"
        )
    passes = sum(math.comb(n_columns, k) for k in range(max_differences + 1))
    if passes > MAX_MASKED_COLUMN_SETS:
        raise NearDuplicateSearchError(
            f"{n_columns} columns with max_differences={max_differences} need {passes} passes "
            f"(at most {MAX_MASKED_COLUMN_SETS}); use a smaller max_differences"
        )
    hashes = _cell_hashes(frame)
    totals = hashes.sum(axis=2, dtype=np.uint64)  # uint64 sums wrap around, as hashing wants
    sources, targets = [], []
    for k in range(max_differences + 1):
        for masked in combinations(range(n_columns), k):
            keys = totals - hashes[:, :, list(masked)].sum(axis=2, dtype=np.uint64) if masked else totals
            _, first, inverse, counts = np.unique(
                keys, axis=0, return_index=True, return_inverse=True, return_counts=True
            )
            inverse = inverse.reshape(-1)
            linked = counts[inverse] > 1
            sources.append(np.flatnonzero(linked))
            targets.append(first[inverse[linked]])
    source = np.concatenate(sources) if sources else np.zeros(0, dtype=np.int64)
    target = np.concatenate(targets) if targets else np.zeros(0, dtype=np.int64)
    graph = coo_matrix((np.ones(len(source), dtype=np.int8), (source, target)), shape=(n_rows, n_rows))
    _, groups = connected_components(graph, directed=False)
    sizes = np.bincount(groups, minlength=groups.max(initial=-1) + 1)
    in_groups = sizes[groups] > 1
    pure, chance = math.nan, math.nan
    if y is not None and in_groups.any():
        labels = np.asarray(y, dtype=float)
        positives = np.bincount(groups, weights=labels, minlength=len(sizes))
        group_pure = (positives == 0) | (positives == sizes)
        rate = float(labels.mean())
        pure = float(group_pure[groups[in_groups]].mean())
        member_sizes = sizes[groups[in_groups]]
        chance = float(np.mean(rate**member_sizes + (1.0 - rate) ** member_sizes))
    return NearDuplicateReport(
        max_differences=max_differences,
        n_rows=n_rows,
        n_columns=n_columns,
        groups=groups,
        rows_in_groups=int(in_groups.sum()),
        multi_row_groups=int((sizes > 1).sum()),
        label_pure_share=pure,
        chance_pure_share=chance,
    )


def _rounded(value: float) -> float | None:
    return round(value, 4) if math.isfinite(value) else None


def _cell_hashes(frame: pd.DataFrame) -> np.ndarray:
    """``(rows, 2, columns)`` uint64: two independent 64-bit hashes of each (column, value) pair.

    Summing them over the columns that are compared gives a 128-bit row key; two rows get the same key by
    accident with probability about ``rows**2 / 2**128``, never in practice. Missing cells hash alike.
    """
    n_rows, n_columns = frame.shape
    out = np.empty((n_rows, 2, n_columns), dtype=np.uint64)
    for position in range(n_columns):
        codes, _ = pd.factorize(frame.iloc[:, position], use_na_sentinel=False)
        codes = codes.astype(np.uint64)
        for family in range(2):
            seed = np.uint64((position * 2 + family + 1) * 0x9E3779B97F4A7C15 % 2**64)
            out[:, family, position] = _splitmix64(codes + seed)
    return out


def _splitmix64(values: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = values + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))
