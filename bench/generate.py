"""Demo-store generation speed: ``churn_generate`` through the real service, and why it inserts the way it does.

    .venv/bin/python bench/generate.py [--customers 2000] [--days 365]       # SQLite, in a scratch folder
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_generate .venv/bin/python bench/generate.py

The PostgreSQL database named in DATABASE_URL is dropped and created again, so its name must start
with ``bench``. Prints the simulation time alone, the full service time (simulation plus inserts, one
transaction) with rows per second, and, on a 500-customer sample in the same run, the ratio of Django's
``bulk_create`` (the baseline) to the service's plain multi-row inserts for the same records.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from _scratch import without_services  # noqa: E402 - bench/ is on sys.path when a bench runs

END = datetime(2026, 1, 1, tzinfo=UTC)


def _prepare_database(scratch: Path) -> str:
    os.environ["CHURN_VAR_DIR"] = str(scratch)
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        without_services(os.environ)  # blank, so that a developer's .env cannot bring its database back
        return f"SQLite file in {scratch}"
    name = urlparse(url).path.lstrip("/")
    if not name.startswith("bench"):
        raise SystemExit(f"refusing to drop database {name!r}: the benchmark database name must start with 'bench'")
    import psycopg

    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    return f"PostgreSQL database {name}"


def _sample_inserts(options: object) -> tuple[float, float, int]:
    """Seconds for bulk_create and for the plain inserts of the same order/event/message records.

    Each variant runs in a transaction that is rolled back, on an otherwise empty database.
    """
    from django.db import transaction

    from customers.generator import simulate_store
    from customers.models import Customer, Event, Message, Order
    from customers.services import _DEMO_COLUMNS, _insert_demo_records

    blocks = list(simulate_store(options))
    customers = [customer for block in blocks for customer in block.customers]
    records = {
        Order: [row for block in blocks for row in block.orders],
        Event: [row for block in blocks for row in block.events],
        Message: [row for block in blocks for row in block.messages],
    }
    rows = sum(len(items) for items in records.values())

    def as_instances(model: type, items: list, pk_of: dict[str, int]) -> list:
        names = _DEMO_COLUMNS[model]
        return [
            model(**{("customer_id" if name == "customer" else name): (pk_of[item.customer_external_id]
                     if name == "customer" else getattr(item, name)) for name in names})
            for item in items
        ]  # fmt: skip

    timings = []
    for insert in ("bulk_create", "plain"):
        with transaction.atomic():
            created = Customer.objects.bulk_create(Customer(external_id=c.external_id) for c in customers)
            pk_of = {customer.external_id: customer.pk for customer in created}
            started = time.perf_counter()
            for model, items in records.items():
                if insert == "bulk_create":
                    model.objects.bulk_create(as_instances(model, items, pk_of), batch_size=2000)
                else:
                    _insert_demo_records(model, items, pk_of)
            timings.append(time.perf_counter() - started)
            transaction.set_rollback(True)
    return timings[0], timings[1], rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--days", type=int, default=365)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-generate-") as scratch:
        where = _prepare_database(Path(scratch))
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "churnsite.settings")
        import django

        django.setup()
        from django.core.management import call_command

        from customers.generator import StoreOptions, simulate_store
        from customers.services import demo_store_generate

        call_command("migrate", verbosity=0)
        print(f"database: {where}; {arguments.customers} customers, {arguments.days} days")

        sample = StoreOptions(customers=500, days=arguments.days, seed=1, end=END)
        baseline, plain, sample_rows = _sample_inserts(sample)

        options = StoreOptions(customers=arguments.customers, days=arguments.days, seed=0, end=END)
        started = time.perf_counter()
        for _block in simulate_store(options):
            pass
        simulation = time.perf_counter() - started

        started = time.perf_counter()
        summary = demo_store_generate(customers=arguments.customers, days=arguments.days, seed=0, end=END)
        total = time.perf_counter() - started
        rows = summary.customers + summary.orders + summary.events + summary.messages
        print(f"simulation alone:     {simulation:6.1f} s")
        print(
            f"churn_generate total: {total:6.1f} s  ({summary.orders} orders, {summary.events} events, "
            f"{summary.messages} messages; {rows / total:,.0f} rows/s)"
        )
        print(
            f"inserting {sample_rows} rows of a {sample.customers}-customer sample: bulk_create {baseline:.2f} s, "
            f"plain inserts {plain:.2f} s; speed-up x{baseline / plain:.1f}"
        )


if __name__ == "__main__":
    main()
