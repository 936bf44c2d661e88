"""Import speed and memory: a million generated orders through the real import service.

    .venv/bin/python bench/ingest.py [--rows 1000000]                      # SQLite, in a scratch file
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_ingest .venv/bin/python bench/ingest.py

The PostgreSQL database named in DATABASE_URL is dropped and created again, so its name must start
with ``bench``. Prints rows per second, the growth of the process's peak memory (a small import of
a tenth of the rows first, then the full one: flat memory means both grow alike), and the ratio
against a plain loop that saves one ``Order`` per row over a 20,000-row sample, in the same run.
Since the machine may be shared, it also prints the load average and what does not depend on it:
the CPU time per million rows of this process and, on PostgreSQL, of the server's backends.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import resource
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlparse

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from _scratch import at_least, without_services  # noqa: E402 - bench/ is on sys.path when a bench runs


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _prepare_database(scratch: Path) -> str:
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        os.environ["CHURN_VAR_DIR"] = str(scratch)
        without_services(os.environ)  # blank, so that a developer's .env cannot bring its database back
        return f"SQLite file in {scratch}"
    name = urlparse(url).path.lstrip("/")
    if not name.startswith("bench"):
        raise SystemExit(f"refusing to drop database {name!r}: the benchmark database name must start with 'bench'")
    import psycopg

    admin_url = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    os.environ["CHURN_VAR_DIR"] = str(scratch)
    return f"PostgreSQL database {name}"


def _write_orders(path: Path, *, rows: int, customers: int, prefix: str, seed: int) -> None:
    """A transaction log (customer_id,date,amount) in time order, as shops export them; the README's example."""
    rng = random.Random(seed)
    moment = datetime(2023, 1, 1, tzinfo=UTC)
    mean_gap = 600 * 86400 / rows
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["customer_id", "date", "amount"])
        for _ in range(rows):
            moment += timedelta(seconds=round(rng.expovariate(1 / mean_gap)))
            writer.writerow(
                [f"{prefix}{rng.randrange(customers)}", moment.isoformat(), f"{rng.randrange(0, 50000) / 100:.2f}"]
            )


def _save_loop(path: Path) -> tuple[int, float]:
    """The baseline: read the same CSV and save one Order per row, the way a first script would.

    All inside one transaction, so that the baseline is not dominated by one disk sync per row:
    that makes it faster, and the ratio printed against it conservative.
    """
    from django.db import transaction

    from customers.models import Customer, Order

    customers: dict[str, Customer] = {}
    started = time.perf_counter()
    count = 0
    with path.open(newline="", encoding="utf-8") as handle, transaction.atomic():
        for row in csv.DictReader(handle):
            customer = customers.get(row["customer_id"])
            if customer is None:
                customer, _ = Customer.objects.get_or_create(external_id=row["customer_id"])
                customers[row["customer_id"]] = customer
            Order(
                external_id=f"loop-{count}",
                customer=customer,
                placed_at=datetime.fromisoformat(row["date"]),
                amount=Decimal(row["amount"]),
            ).save()
            count += 1
    return count, time.perf_counter() - started


class _ServerCPU:
    """CPU seconds that PostgreSQL spends on the benchmark database, read from /proc while an import runs.

    The backends serving the database (found in pg_stat_activity) are sampled every 0.1 s: a backend ends
    with its connection, so the work of its last tenth of a second can be missed. None on SQLite, whose
    work is done inside this process, or where the server's /proc entries cannot be read.
    """

    def __init__(self) -> None:
        from django.db import connection

        self.url = os.environ.get("DATABASE_URL", "") if connection.vendor == "postgresql" else ""
        self.seen: dict[int, float] = {}
        self.first: dict[int, float] = {}
        self.stop = threading.Event()
        self.readable = True

    def _sample(self, cursor: object, database: str, me: int) -> None:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> %s", [database, me])  # type: ignore[attr-defined]
        for (pid,) in cursor.fetchall():  # type: ignore[attr-defined]
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                self.readable = False
                continue
            seconds = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            self.first.setdefault(pid, seconds)
            self.seen[pid] = seconds

    def __enter__(self) -> _ServerCPU:
        if self.url:
            import psycopg

            monitor = psycopg.connect(self.url, autocommit=True)
            me = monitor.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
            database = urlparse(self.url).path.lstrip("/")
            self._sample(monitor.cursor(), database, me)
            self.before = dict(self.seen)  # backends that were there before the import: count their growth only

            def watch() -> None:
                with monitor:
                    while not self.stop.wait(0.1):
                        self._sample(monitor.cursor(), database, me)
                    self._sample(monitor.cursor(), database, me)

            self.thread = threading.Thread(target=watch, daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.url:
            self.stop.set()
            self.thread.join()

    @property
    def seconds(self) -> float | None:
        if not self.url or not self.readable:
            return None
        return sum(value - self.before.get(pid, 0.0) for pid, value in self.seen.items())


def _import(path: Path) -> tuple[object, float, float, float | None, float]:
    """(result, wall seconds, CPU seconds of this process, of the database server, growth of the peak RSS in MiB)."""
    from customers.ingest import import_file, import_options_from_settings

    before = _peak_rss_mib()
    with _ServerCPU() as server:
        started, cpu_started = time.perf_counter(), time.process_time()
        with path.open("rb") as stream:
            result = import_file(stream=stream, source=str(path), options=import_options_from_settings(kind="orders"))
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return result, seconds, cpu, server.seconds, _peak_rss_mib() - before


def _load() -> str:
    return "load average " + " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=at_least(1), default=1_000_000)
    parser.add_argument("--sample", type=int, default=20_000, help="rows of the one-save()-per-row baseline")
    parser.add_argument("--customers", type=int, default=20_000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        scratch = Path(tmp)
        where = _prepare_database(scratch)
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "churnsite.settings")
        os.environ["LOG_LEVEL"] = "WARNING"
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connection

        call_command("migrate", verbosity=0)
        small_rows = max(args.rows // 10, 1)
        files = {
            "sample": (scratch / "sample.csv", args.sample, "s"),
            "small": (scratch / "small.csv", small_rows, "m"),
            "full": (scratch / "full.csv", args.rows, "c"),
        }
        for index, (path, rows, prefix) in enumerate(files.values()):
            _write_orders(path, rows=rows, customers=args.customers, prefix=prefix, seed=index)
        print(f"database: {where} ({connection.vendor}); {args.rows:,} orders for {args.customers:,} customers")

        cpu_started = time.process_time()
        loop_rows, loop_seconds = _save_loop(files["sample"][0])
        loop_rate = loop_rows / loop_seconds
        print(
            f"baseline  one save() per row: {loop_rows:>9,} rows in {loop_seconds:7.1f}s = {loop_rate:>9,.0f} rows/s "
            f"({loop_rows / (time.process_time() - cpu_started):,.0f} rows per CPU-second)"
        )

        for label in ("small", "full"):
            path, rows, _ = files[label]
            load_before = _load()
            result, seconds, cpu, server, grew = _import(path)
            rate = result.rows_total / seconds
            print(
                f"import    {label:<5} {result.rows_imported:>9,} of {result.rows_total:,} rows in {seconds:7.1f}s "
                f"= {rate:>9,.0f} rows/s  ({rate / loop_rate:5.1f}x the save() loop); "
                f"peak memory grew {grew:6.1f} MiB (now {_peak_rss_mib():.0f} MiB); "
                f"rejected {result.rows_rejected}, minimal customers created {result.customers_created:,}"
            )
            per_million = 1_000_000 / result.rows_total
            work = f"          CPU per 1M rows: this process {cpu * per_million:5.1f}s"
            if server is not None:
                work += (
                    f", database server {server * per_million:5.1f}s, together {(cpu + server) * per_million:5.1f}s"
                    f" = {result.rows_total / (cpu + server):,.0f} rows per CPU-second"
                )
            else:
                work += f" = {result.rows_total / cpu:,.0f} rows per CPU-second"
            print(f"{work}; {load_before} before, {_load()} after")
            if result.rows_imported != rows:
                raise SystemExit(f"expected {rows} imported rows, got {result.rows_imported}")
        path = files["full"][0]
        result, seconds, _, _, _ = _import(path)
        print(
            f"re-import full  {result.rows_imported:>9,} new, {result.rows_unchanged:,} unchanged in {seconds:7.1f}s "
            f"= {result.rows_total / seconds:>9,.0f} rows/s"
        )
        connection.close()


if __name__ == "__main__":
    main()
