"""How long a page of the score API, the dashboard and the customer list take on a scored store.

    DATABASE_URL=postgres://.../copy CHURN_VAR_DIR=... .venv/bin/python bench/score_pages.py [--repeat 5]

With ``--prune-keep-days N`` it first prunes the scores as the daily task does (``churn_scores_prune``), so the
pages can be timed before and after. Run it on a copy of a scored store (it adds a staff user, ``bench-score-pages``, to log in with): the figures of the
README's score API paging and retention sections come from a copy of the 50,000-customer demo store, scored by
``churn_train`` and ``churn_score`` (two and five scoring runs).

For each ordering of ``/api/v1/scores/``: the first page (50 rows), and a page from a cursor in the middle of the
list (the row at position 25,000 of every customer's newest score in that order, where the ordering's column has
long runs of ties). Then the dashboard (``/admin/dashboard/``), the customer admin list and ``/api/v1/customers/``.
Prints the median wall time of ``--repeat`` requests after one unmeasured one (the view, its queries and the JSON
or HTML); for the lists also the median time of their queries, and for each score page the database's own time of
its page query (``EXPLAIN ANALYZE``, execution time) and whether its plan sorts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

ORDERINGS = ["-probability", "probability", "-as_of", "as_of", "-created_at", "created_at", "customer", "-customer"]
MIDDLE = 25_000


def _cursor(ordering: str) -> str | None:
    """The cursor of the row at position MIDDLE of every customer's newest score in ``ordering`` (ties by id)."""
    from churnsite.api import keyset_cursor
    from predictions.selectors import latest_scores

    column = ordering.lstrip("-")
    attname = "customer_id" if column == "customer" else column
    tie = "-id" if ordering.startswith("-") else "id"
    row = list(latest_scores().order_by(ordering, tie).values_list(attname, "id")[MIDDLE : MIDDLE + 1])
    return keyset_cursor([ordering.replace(column, attname), tie], row[0]) if row else None


def _time(client: object, url: str, repeat: int) -> tuple[float, float]:
    """Median wall time of the request and median time of its queries (as the database driver saw them), in ms."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    response = client.get(url)
    assert response.status_code == 200, (url, response.status_code, response.content[:300])
    times, database = [], []
    for _ in range(repeat):
        with CaptureQueriesContext(connection) as captured:
            start = time.perf_counter()
            client.get(url)
            times.append((time.perf_counter() - start) * 1000)
        database.append(sum(float(query["time"]) for query in captured.captured_queries) * 1000)
    return statistics.median(times), statistics.median(database)


def _page_query_plan(client: object, url: str) -> tuple[float, bool]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        client.get(url)
    pages = [
        q["sql"] for q in captured.captured_queries if "predictions_churnscore" in q["sql"] and "LIMIT" in q["sql"]
    ]
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + pages[-1])
        plan = cursor.fetchone()[0]
    plan = plan[0] if isinstance(plan, list) else json.loads(plan)[0]

    def sorts(node: dict) -> bool:
        return node.get("Node Type") == "Sort" or any(sorts(child) for child in node.get("Plans", []))

    return plan["Execution Time"], sorts(plan["Plan"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", choices=["scores", "lists"], help="time only the score pages or only the lists")
    parser.add_argument(
        "--prune-keep-days",
        type=int,
        help="first prune the scores as the daily task does with CHURN_SCORES_KEEP_DAYS=N (it deletes: use a copy), "
        "twice, printing how many went and how long each took",
    )
    options = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "churnsite.settings")
    os.environ.setdefault("CELERY_TASK_ALWAYS_EAGER", "true")
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.test import Client

    from predictions.models import ChurnScore, ScoringRun

    user, _ = get_user_model().objects.get_or_create(
        username="bench-score-pages", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client(HTTP_HOST="localhost")
    client.force_login(user)
    print(
        f"{ChurnScore.objects.count():,} scores, {ScoringRun.objects.count()} scoring runs, "
        f"{ChurnScore.objects.values('customer').distinct().count():,} customers scored"
    )
    if options.prune_keep_days is not None:
        from datetime import timedelta

        from predictions.services import churn_scores_prune

        for attempt in ("prune", "again"):
            start = time.perf_counter()
            deleted = churn_scores_prune(older_than=timedelta(days=options.prune_keep_days))
            print(
                f"{attempt}: {deleted:,} scores deleted in {time.perf_counter() - start:.1f} s, "
                f"{ChurnScore.objects.count():,} left"
            )
    if options.only != "lists":
        for ordering in ORDERINGS:
            for where, cursor in (("first page", None), (f"page at row {MIDDLE:,}", _cursor(ordering))):
                url = f"/api/v1/scores/?ordering={ordering}" + (f"&cursor={cursor}" if cursor else "")
                view_ms, _ = _time(client, url, options.repeat)
                query_ms, sorted_ = _page_query_plan(client, url)
                print(
                    f"scores ?ordering={ordering:<13} {where:<18} view {view_ms:8.1f} ms   "
                    f"page query {query_ms:8.1f} ms{'  (sorts)' if sorted_ else ''}"
                )
    if options.only != "scores":
        for name, url in (
            ("dashboard", "/admin/dashboard/"),
            ("customer admin list", "/admin/customers/customer/"),
            ("customers API", "/api/v1/customers/"),
        ):
            view_ms, database_ms = _time(client, url, options.repeat)
            print(f"{name:<40} view {view_ms:8.1f} ms   its queries {database_ms:8.1f} ms")


if __name__ == "__main__":
    main()
