"""How much churn signal the demo store's messages carry, beside behaviour: the figures of README "Demo data".

    .venv/bin/python bench/demo_signal.py [--customers 2000] [--days 365] [--seed 0] [--end 2026-01-01]

Pure simulation (no database): the same records ``churn_generate --languages en,zh`` stores, plus the hidden
truth. Prints churn rates, how often complainers churn against the others (true churn, and the noisy
inactivity label of a backtest with a cutoff 90 days before the end), and how noisy that label is.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))


def _rate(flags: list[bool]) -> str:
    return f"{sum(flags) / len(flags):5.1%} of {len(flags)}" if flags else "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--end", default="2026-01-01")
    arguments = parser.parse_args()

    from customers.generator import StoreOptions, simulate_store
    from customers.generator.text import COMPLAINT_TOPICS

    end_day = date.fromisoformat(arguments.end)
    end = datetime(end_day.year, end_day.month, end_day.day, tzinfo=UTC)
    options = StoreOptions(
        customers=arguments.customers, days=arguments.days, seed=arguments.seed, end=end, languages=("en", "zh")
    )
    truths, orders = [], defaultdict(list)
    for block in simulate_store(options):
        truths.extend(block.truths)
        for order in block.orders:
            orders[order.customer_external_id].append(order.placed_at)

    def complained(truth: object, before: datetime) -> bool:
        return any(topic in COMPLAINT_TOPICS and at < before for at, topic in truth.conversation_topics)

    churned_inside = [t.churn_at is not None and t.churn_at < end for t in truths]
    churned_after = [t.churn_at is not None and t.churn_at >= end for t in truths]
    print(f"{len(truths)} customers, {arguments.days} days to {arguments.end}, seed {arguments.seed}")
    print(f"churn inside the history: {_rate(churned_inside)}; in the {options.future_days} days after: "
          f"{_rate(churned_after)}")  # fmt: skip
    churners = [t for t in truths if t.churn_at is not None]
    print(f"churners who never complained: {_rate([not complained(t, end) for t in churners])}")
    print(
        f"true churn among customers who complained: {_rate([t.churn_at is not None for t in truths if complained(t, end)])}; "
        f"among the others: {_rate([t.churn_at is not None for t in truths if not complained(t, end)])}"
    )

    cutoff = end - timedelta(days=90)
    inactive = {True: [], False: []}
    label_is_true_churn = []
    for truth in truths:
        placed = orders[truth.external_id]
        if not any(cutoff - timedelta(days=180) <= at < cutoff for at in placed):
            continue
        label = not any(at >= cutoff for at in placed)
        inactive[complained(truth, cutoff)].append(label)
        if label:
            label_is_true_churn.append(truth.churn_at is not None and truth.churn_at < end)
    print("backtest: cutoff 90 days before the end, customers with an order in the 180 days before it, "
          "label = no order in the 90 days after")  # fmt: skip
    print(f"  inactive among complainers before the cutoff: {_rate(inactive[True])}; among the others: "
          f"{_rate(inactive[False])}")  # fmt: skip
    print(f"  inactive customers who truly churned: {_rate(label_is_true_churn)}")


if __name__ == "__main__":
    main()
