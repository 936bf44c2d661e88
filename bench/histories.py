"""Memory and time of reading every customer's history (``predictions.selectors.customer_histories``).

    .venv/bin/python bench/histories.py [--customers 5000] [--days 365] [--seed 7]

In a scratch SQLite database (CHURN_VAR_DIR in a temporary folder; DATABASE_URL is ignored), generates a demo
store and reads all histories twice in the same process, measured with tracemalloc (the Python heap the records
hold once read, and the peak while reading):

1. **with properties** (``event_properties=True``): every event's properties too, as a training run read them
   before no model was found to read them;
2. **default**: what training, scoring and backtests read now (no event properties).

Prints the customers, events, seconds, MiB held and peak, bytes per event, and the ratios with properties/default.
Training holds its whole store's histories at once, so the held figure times the store size is its floor.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _scratch import at_least, scratch_django  # noqa: E402 - bench/ is on sys.path when a bench runs

END = datetime(2026, 11, 27, tzinfo=UTC)


def measure(*, event_properties: bool) -> tuple[int, float, int, int]:
    """(events read, seconds, bytes held by the histories, peak bytes while reading)."""
    from predictions.selectors import customer_histories

    gc.collect()
    tracemalloc.start()
    started = time.perf_counter()
    histories = customer_histories(until=END, event_properties=event_properties)
    seconds = time.perf_counter() - started
    gc.collect()
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    events = sum(len(history.events) for history in histories)
    del histories
    return events, seconds, held, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=at_least(10), default=5000)
    parser.add_argument("--days", type=at_least(30), default=365)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    scratch_django("churn-bench-histories-", LOG_LEVEL="WARNING")
    from django.core.management import call_command

    from customers.services import demo_store_generate

    call_command("migrate", verbosity=0)
    started = time.perf_counter()
    demo_store_generate(customers=args.customers, days=args.days, seed=args.seed, end=END)
    print(f"generated {args.customers} customers in {time.perf_counter() - started:.0f}s", flush=True)

    mib = 2**20
    results = {}
    print(f"{'read':18} {'events':>9} {'seconds':>8} {'MiB held':>9} {'MiB peak':>9} {'B/event':>8}")
    for label, event_properties in (("with properties", True), ("default", False)):
        events, seconds, held, peak = measure(event_properties=event_properties)
        results[label] = (seconds, held, peak)
        print(
            f"{label:18} {events:>9,} {seconds:>8.2f} {held / mib:>9.1f} {peak / mib:>9.1f} {held / events:>8.0f}",
            flush=True,
        )
    (t_with, held_with, peak_with), (t_default, held_default, peak_default) = results.values()
    print(
        f"with properties / default: held {held_with / held_default:.2f}x, peak {peak_with / peak_default:.2f}x, "
        f"time {t_with / t_default:.2f}x"
    )


if __name__ == "__main__":
    main()
