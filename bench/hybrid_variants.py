"""Variants of the hybrid's last stage that were tried for the telco and ecommerce targets and not kept.

    .venv/bin/python bench/hybrid_variants.py telco      # blends and seed averaging (needs the frozen encoder)
    .venv/bin/python bench/hybrid_variants.py ecommerce  # a wider LightGBM grid (features only)

Reads ``../shared/data`` and follows its protocol: 5-fold stratified CV (shuffle, random_state 0) after the
dataset's cleaning; every choice (leaves, blend weights, grid point) is made on out-of-fold scores of an inner
5-fold split of the training folds only. Prints the mean outer ROC AUC of each variant next to the features-only
LightGBM that chooses its leaves the way the hybrid does. Frozen text vectors come from the encoding cache in
``var/cache`` (filled by ``churn_evaluate``) or are encoded once.

telco: ``lightgbm`` (leaves 3/7/15/31 by inner out-of-fold ROC AUC), ``text`` (the frozen head), ``blend`` (a
logistic regression over the out-of-fold logits of LightGBM, the features' logistic regression and the text
score), ``bagged`` (LightGBM with the chosen leaves averaged over 5 seeds).
ecommerce: ``lightgbm`` as above, ``wide grid`` (leaves up to 127), ``wide grid, min_child_samples 5``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from _scratch import DATA, cache_dir, shared_profile  # noqa: E402 - bench/ is on sys.path when a bench runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=["telco", "ecommerce"])
    args = parser.parse_args()

    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    from ml.baselines import LightGBMChurn, LightGBMOptions, LogisticRegressionChurn
    from ml.metrics import roc_auc

    data = shared_profile(args.dataset)
    x, y = data.frame, data.y

    def logit(p: np.ndarray) -> np.ndarray:
        p = np.clip(p, 1e-6, 1 - 1e-6)
        return np.log(p / (1 - p))

    def choose_leaves(options: LightGBMOptions, frame, labels, inner) -> tuple[LightGBMOptions, np.ndarray]:  # noqa: ANN001
        best = None
        for leaves in options.num_leaves_grid:
            candidate, oof = replace(options, num_leaves_grid=(leaves,)), np.zeros(len(labels))
            for fit_rows, held_out in inner:
                model = LightGBMChurn(candidate).fit(frame.iloc[fit_rows], labels[fit_rows])
                oof[held_out] = model.predict_proba(frame.iloc[held_out])[:, 1]
            score = roc_auc(labels, oof)
            if best is None or score > best[0]:
                best = (score, candidate, oof)
        assert best is not None
        return best[1], best[2]

    embedder = None
    texts: list[str] = []
    if args.dataset == "telco":
        from ml.hybrid import FrozenEmbeddingHead, SharedEmbedder
        from ml.serialize import serialize_profile

        texts = [serialize_profile(record) for record in x.to_dict(orient="records")]
        embedder = SharedEmbedder(None, cache_dir=cache_dir(), device="cpu")
        embedder.embed(texts)
        print(f"texts encoded now: {embedder.n_encoded} (the rest came from the cache)", flush=True)

    base = LightGBMOptions(num_leaves_grid=(3, 7, 15, 31))
    results: dict[str, list[float]] = {}
    outer = StratifiedKFold(5, shuffle=True, random_state=0)
    for fold, (train_rows, test_rows) in enumerate(outer.split(x, y)):
        x_train, y_train = x.iloc[train_rows].reset_index(drop=True), y[train_rows]
        x_test, y_test = x.iloc[test_rows].reset_index(drop=True), y[test_rows]
        inner = list(StratifiedKFold(5, shuffle=True, random_state=0).split(x_train, y_train))
        chosen, lightgbm_oof = choose_leaves(base, x_train, y_train, inner)
        lightgbm_test = LightGBMChurn(chosen).fit(x_train, y_train).predict_proba(x_test)[:, 1]
        scores = {"lightgbm": lightgbm_test}
        if args.dataset == "telco":
            assert embedder is not None
            train_texts, test_texts = [texts[i] for i in train_rows], [texts[i] for i in test_rows]
            text_oof, logreg_oof = np.zeros(len(y_train)), np.zeros(len(y_train))
            for fit_rows, held_out in inner:
                head = FrozenEmbeddingHead(embedder, c_grid=(1.0, 10.0, 100.0))
                head.fit([train_texts[i] for i in fit_rows], y_train[fit_rows])
                text_oof[held_out] = head.predict_proba([train_texts[i] for i in held_out])[:, 1]
                logreg = LogisticRegressionChurn().fit(x_train.iloc[fit_rows], y_train[fit_rows])
                logreg_oof[held_out] = logreg.predict_proba(x_train.iloc[held_out])[:, 1]
            head = FrozenEmbeddingHead(embedder, c_grid=(1.0, 10.0, 100.0)).fit(train_texts, y_train)
            text_test = head.predict_proba(test_texts)[:, 1]
            logreg_test = LogisticRegressionChurn().fit(x_train, y_train).predict_proba(x_test)[:, 1]
            stacker = LogisticRegression().fit(
                np.column_stack([logit(lightgbm_oof), logit(logreg_oof), logit(text_oof)]), y_train
            )
            blend = np.column_stack([logit(lightgbm_test), logit(logreg_test), logit(text_test)])
            seeds = [
                LightGBMChurn(replace(chosen, random_state=seed)).fit(x_train, y_train).predict_proba(x_test)[:, 1]
                for seed in range(5)
            ]
            scores |= {
                "text": text_test,
                "blend": stacker.predict_proba(blend)[:, 1],
                "bagged": np.mean(seeds, axis=0),
            }
        else:
            for label, options in (
                ("wide grid", LightGBMOptions(num_leaves_grid=(3, 7, 15, 31, 63, 127))),
                (
                    "wide grid, min_child_samples 5",
                    LightGBMOptions(num_leaves_grid=(15, 31, 63, 127), min_child_samples=5),
                ),
            ):
                wide, _ = choose_leaves(options, x_train, y_train, inner)
                scores[label] = LightGBMChurn(wide).fit(x_train, y_train).predict_proba(x_test)[:, 1]
        for name, score in scores.items():
            results.setdefault(name, []).append(roc_auc(y_test, score))
        print(
            f"fold {fold + 1}: " + ", ".join(f"{name} {values[-1]:.4f}" for name, values in results.items()), flush=True
        )
    print(f"{args.dataset}, mean ROC AUC over the 5 outer folds:")
    for name, values in results.items():
        print(f"  {name:32s} {np.mean(values):.4f} ± {np.std(values):.4f}")


if __name__ == "__main__":
    from ml.features import ProfileError

    try:
        main()
    except ProfileError as error:  # the shared data missing or unreadable: say so, without a traceback
        raise SystemExit(f"{error} (the shared datasets are read from {DATA})") from None
