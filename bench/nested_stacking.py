"""The hybrid with and without nested stacking on a shared profile dataset: what its inner cross-validation sees.

    .venv/bin/python bench/nested_stacking.py telco            # the 5 outer training folds of the protocol
    .venv/bin/python bench/nested_stacking.py bank --folds 1   # the first bank training fold only

For each outer training fold of the shared protocol (5-fold stratified CV, shuffle, random_state 0, after the
dataset's cleaning), fits the default frozen hybrid twice in one process, with ``nested_stacking`` off and on,
and prints the fit time, whether the text score was kept, the best inner out-of-fold ROC AUC of a variant with the
text score and of the features-only variant. The outer test folds are not scored (``churn_evaluate`` does that).
Frozen text vectors come from the encoding cache in ``var/cache`` (filled by ``churn_evaluate``) or are encoded
once before the timings.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from _scratch import DATA, cache_dir, shared_profile  # noqa: E402 - bench/ is on sys.path when a bench runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=["telco", "bank"])
    parser.add_argument("--folds", type=int, default=5, help="outer training folds to fit on (1 to 5)")
    args = parser.parse_args()

    from sklearn.model_selection import StratifiedKFold

    from ml.hybrid import HybridChurnModel, HybridConfig, SharedEmbedder
    from ml.serialize import serialize_profile

    data = shared_profile(args.dataset)
    texts = [serialize_profile(record) for record in data.frame.to_dict(orient="records")]
    embedder = SharedEmbedder(None, cache_dir=cache_dir(), device="cpu")
    embedder.embed(texts)
    print(f"{args.dataset}: {len(texts)} rows; texts encoded now: {embedder.n_encoded}", flush=True)

    splits = StratifiedKFold(n_splits=5, shuffle=True, random_state=0).split(texts, data.y)
    print("fold  nested  fit s   text kept  best with text  features only")
    for fold, (train, _) in enumerate(splits, start=1):
        if fold > args.folds:
            break
        frame, fold_texts = data.frame.iloc[train].reset_index(drop=True), [texts[i] for i in train]
        for nested in (False, True):
            started = time.perf_counter()
            model = HybridChurnModel(HybridConfig(nested_stacking=nested), embedder=embedder).fit(
                frame, fold_texts, data.y[train]
            )
            seconds = time.perf_counter() - started
            scores = model.leaves_cv_roc_auc_
            with_text = max(v for name, v in scores.items() if "no text" not in name)
            features_only = max(v for name, v in scores.items() if "no text" in name)
            print(
                f"{fold:>4}  {'yes' if nested else 'no':>6}  {seconds:5.1f}  {str(model.text_selected_):>9}  "
                f"{with_text:14.4f}  {features_only:13.4f}",
                flush=True,
            )


if __name__ == "__main__":
    from ml.features import ProfileError

    try:
        main()
    except ProfileError as error:  # the shared data missing or unreadable: say so, without a traceback
        raise SystemExit(f"{error} (the shared datasets are read from {DATA})") from None
