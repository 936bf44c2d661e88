"""Model card: its figures on a generated store, and its extra training cost against the fit it describes.

    .venv/bin/python bench/model_card.py [--customers 1500] [--days 400] [--horizon 60] [--mode lightgbm]

Generates a demo store in a scratch SQLite folder, trains the churn model as a training run does (same
configuration as ``churn_model_config``), then builds the model card (``ml.model_card.churn_model_card``:
recency rule, logistic regression and features-only LightGBM fitted on the same training rows, curves on
the same holdout). Prints the card's metrics per model and the card's seconds as a share of the fit's, both
measured in this process on the same data.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from _scratch import scratch_django  # noqa: E402 - bench/ is on sys.path when a bench runs

END = datetime(2026, 6, 1, tzinfo=UTC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=1500)
    parser.add_argument("--days", type=int, default=400)
    parser.add_argument("--horizon", type=int, default=60)
    parser.add_argument("--mode", default="lightgbm", help="a training mode (lightgbm, tfidf, frozen, ...)")
    parser.add_argument("--cutoffs", type=int, default=4, help="most rolling cutoffs (the newest is the holdout)")
    args = parser.parse_args()
    scratch_django("bench-model-card-")
    import logging

    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    logging.disable(logging.INFO)
    from customers.services import demo_store_generate
    from ml.churn_model import ChurnModel
    from ml.model_card import churn_model_card
    from predictions.selectors import customer_histories
    from predictions.services.training import churn_model_config

    demo_store_generate(customers=args.customers, days=args.days, seed=7, end=END)
    histories = customer_histories(until=END)
    config = churn_model_config(
        mode=args.mode, horizon_days=args.horizon, lead_days=0, options={"max_training_cutoffs": args.cutoffs}
    )
    started = time.perf_counter()
    model = ChurnModel(config).fit(histories, as_of=END)
    fit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    card = churn_model_card(model)
    card_seconds = time.perf_counter() - started
    training, holdout = card["training"], card["holdout"]
    print(  # noqa: T201
        f"{args.customers} customers, {args.days} days, horizon {args.horizon} d, mode {args.mode}: "
        f"{training['n']} training snapshots at {len(training['cutoffs'])} cutoffs, "
        f"holdout {holdout['n']} ({holdout['positives']} churned) at {holdout['cutoff'][:10]}"
    )
    print(f"{'model':<28} {'ROC AUC':>8} {'PR AUC':>8} {'lift@10%':>9} {'Brier':>7} {'ECE':>7}")  # noqa: T201
    for entry in card["models"]:
        m = entry["metrics"]
        print(  # noqa: T201
            f"{entry['label']:<28} {m['roc_auc']:>8.3f} {m['pr_auc']:>8.3f} {m['lift_at_10']:>9.2f} "
            f"{m['brier']:>7.3f} {m['ece']:>7.3f}"
        )
    print(  # noqa: T201
        f"fit {fit_seconds:.1f} s, model card {card_seconds:.1f} s: the card adds {card_seconds / fit_seconds:.0%} "
        f"to the fit ({', '.join(f'{k} {v:.1f} s' for k, v in card['fit_seconds'].items())})"
    )


if __name__ == "__main__":
    main()
