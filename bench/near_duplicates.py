"""Near-duplicate rows in the shared profile datasets, and what a model that only remembers rows scores.

    .venv/bin/python bench/near_duplicates.py [--max-differences 0 1 2 3]

For telco, ecommerce (deduplicated) and bank, cleaned as `churn_evaluate` cleans them: rows in groups of
near-duplicates (equal in all but k columns, missing equals missing) for each k, how often a group carries one
label against chance, and the search time. Then a pure memory model under the shared protocol (5-fold stratified,
shuffle, random_state 0): each test row takes the label of its nearest training rows by the number of differing
cells (ties averaged), with no learning at all; its ROC AUC is what copies alone are worth.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from baselines import BANK_LEAKS, DATA  # noqa: E402

from ml.features import load_profile_file, prepare_profile  # noqa: E402
from ml.leakage import near_duplicates  # noqa: E402

DATASETS = {
    "telco": (DATA / "telco/WA_Fn-UseC_-Telco-Customer-Churn.csv", "Churn", "Yes", "customerID", [], False),
    "ecommerce": (DATA / "ecommerce/ecommerce_churn.csv", "Churn", "1", "CustomerID", [], True),
    "bank": (DATA / "bank/BankChurners.csv", "Attrition_Flag", "Attrited Customer", "CLIENTNUM", BANK_LEAKS, False),
}


def memory_model_auc(frame: pd.DataFrame, y: np.ndarray) -> tuple[float, float]:
    """ROC AUC (mean, std over the protocol's folds) of the nearest-rows-by-differing-cells rule."""
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    codes = np.column_stack([pd.factorize(frame[c], use_na_sentinel=False)[0] for c in frame.columns])
    scores = []
    for train, test in StratifiedKFold(5, shuffle=True, random_state=0).split(codes, y):
        score = np.empty(len(test))
        for start in range(0, len(test), 256):
            block = test[start : start + 256]
            distance = (codes[block, None, :] != codes[None, train, :]).sum(axis=2)
            nearest = distance == distance.min(axis=1, keepdims=True)
            share = (nearest * y[train][None, :]).sum(axis=1) / nearest.sum(axis=1)
            # closer copies are surer: a nearest row 1 cell away outranks one 5 cells away
            score[start : start + len(block)] = share - 1e-3 * distance.min(axis=1) * (share - 0.5)
        scores.append(roc_auc_score(y[test], score))
    return float(np.mean(scores)), float(np.std(scores))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-differences", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    args = parser.parse_args()
    for name in args.datasets:
        path, label, positive, id_col, drop, dedupe = DATASETS[name]
        if not path.exists():
            print(f"{name}: {path} not found, skipped")
            continue
        data = prepare_profile(
            load_profile_file(path), label_col=label, positive=positive, id_col=id_col, drop_cols=drop, dedupe=dedupe
        )
        print(f"{name}: {len(data.y)} rows, {data.frame.shape[1]} feature columns, churn rate {data.y.mean():.3f}")
        for k in args.max_differences:
            started = time.perf_counter()
            found = near_duplicates(data.frame, data.y, max_differences=k)
            seconds = time.perf_counter() - started
            pure = "-" if not found.rows_in_groups else f"{found.label_pure_share:.1%}"
            chance = "-" if not found.rows_in_groups else f"{found.chance_pure_share:.1%}"
            print(
                f"  k={k}: {found.rows_in_groups:5d} rows in {found.multi_row_groups:4d} groups "
                f"({found.share_in_groups:.0%}); label-pure {pure} (chance {chance}); "
                f"{'altered copies' if found.suspicious else 'no sign of copies'}; {seconds:.2f} s"
            )
        mean, std = memory_model_auc(data.frame, data.y)
        print(f"  nearest rows by differing cells, protocol folds: ROC AUC {mean:.3f} ± {std:.3f}", flush=True)


if __name__ == "__main__":
    main()
