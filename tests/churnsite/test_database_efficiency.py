"""Findings of a database-efficiency audit, each pinned: queries that do not grow with the rows they touch, and the
indexes that the big lists, the rule application, the scoring and the dashboard read through.

Plans come from the database the tests run on. PostgreSQL's planner prefers a sequential scan of a small table
whatever indexes it has, so there sequential scans and sorts are switched off for the EXPLAIN (they then appear only
where no index can serve); SQLite's plans are deterministic on small tables.
"""

from __future__ import annotations

import io
import itertools
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.db.models import QuerySet
from django.test.utils import CaptureQueriesContext

from alerts.models import ActionKind, Alert, AlertRule, Intervention, InterventionStatus
from alerts.services import intervention_outcomes_record
from customers.models import Customer, Event, Order
from predictions.models import ChurnScore, ModelVersion, ScoringRun
from predictions.selectors import latest_scores, latest_scores_for_pages

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
_SEQ = itertools.count()


def _plan(sql: str, params: tuple | list = ()) -> str:
    """The query plan as one text (SQLite's EXPLAIN QUERY PLAN, PostgreSQL's EXPLAIN with scans forced to indexes)."""
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute("SET LOCAL enable_sort = off")
            cursor.execute("EXPLAIN " + sql, params)
            return "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
        return "\n".join(row[-1] for row in cursor.fetchall())


def _queryset_plan(queryset: QuerySet) -> str:
    return _plan(*queryset.query.sql_with_params())


def _uses_index(plan: str, table: str, index: str) -> bool:
    if connection.vendor == "postgresql":
        return bool(
            re.search(rf"Index (Only )?Scan( Backward)? using {index} on {table}|Bitmap Index Scan on {index}", plan)
        )
    return f"USING INDEX {index}" in plan or f"USING COVERING INDEX {index}" in plan


def _sorts_or_scans(plan: str, table: str) -> bool:
    if connection.vendor == "postgresql":
        return f"Seq Scan on {table}" in plan or re.search(r"^\s*(->\s*)?Sort\b", plan, re.MULTILINE) is not None
    return "USE TEMP B-TREE FOR ORDER BY" in plan or re.search(rf"^SCAN {table}$", plan, re.MULTILINE) is not None


def _queries(fn: Callable[[], object]) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        fn()
    return [q["sql"] for q in captured.captured_queries]


def _customer(segment: str = "") -> Customer:
    n = next(_SEQ)
    return Customer.objects.create(
        external_id=f"eff-{n}", name=f"Eff {n}", email=f"e{n}@example.com", segment=segment, marketing_consent=True
    )


def _scores(customers: list[Customer], version: ModelVersion, runs: int, start: int = 0) -> ScoringRun:
    run = None
    for day in range(start, start + runs):
        run = ScoringRun.objects.create(model_version=version, as_of=T0 + timedelta(days=day), status="succeeded")
        ChurnScore.objects.bulk_create(
            ChurnScore(
                customer=c, model_version=version, scoring_run=run, as_of=run.as_of,
                probability=((c.pk * 7 + day) % 100) / 100, risk_tier="high",
            )
            for c in customers
        )  # fmt: skip
    assert run is not None
    return run


def _due_interventions(n: int) -> None:
    rule = AlertRule.objects.create(
        name=f"eff-outcomes-{next(_SEQ)}", action=ActionKind.COUPON_EMAIL, holdout_fraction=0, horizon_days=1
    )
    for i in range(n):
        customer = _customer()
        Order.objects.create(  # a customer with orders: judged by them, not by a churn flag
            external_id=f"eff-o-{next(_SEQ)}", customer=customer, placed_at=T0 - timedelta(days=9), amount=1
        )
        if i % 2:  # half of them order inside the horizon: retained
            Order.objects.create(
                external_id=f"eff-o-{next(_SEQ)}", customer=customer, placed_at=T0 + timedelta(hours=5), amount=1
            )
        alert = Alert.objects.create(
            customer=customer, rule=rule, period_start=T0.date(), as_of=T0, probability=0.9, risk_tier="high"
        )
        Intervention.objects.create(
            alert=alert, customer=customer, kind=ActionKind.COUPON_EMAIL, status=InterventionStatus.SENT,
            sent_at=T0, idempotency_key=f"eff-{next(_SEQ)}",
        )  # fmt: skip
    Intervention.objects.update(created_at=T0)


def test_recording_outcomes_costs_the_same_queries_for_2_or_20_due_interventions() -> None:
    # It cost an order query, a savepoint, an update and an audit insert per intervention: 11 and 101 queries.
    _due_interventions(2)
    few = _queries(lambda: intervention_outcomes_record(now=T0 + timedelta(days=2)))
    Intervention.objects.update(outcome="unknown", outcome_at=None)
    _due_interventions(18)
    Intervention.objects.update(outcome="unknown", outcome_at=None)
    counts: dict[str, int] = {}
    many = _queries(lambda: counts.update(intervention_outcomes_record(now=T0 + timedelta(days=2))))
    assert len(many) == len(few), (len(few), len(many))
    assert counts == {"retained": 10, "churned": 10}
    assert Intervention.objects.filter(outcome="unknown").count() == 0
    retained = set(Intervention.objects.filter(outcome="retained").values_list("customer_id", flat=True))
    assert retained == set(Order.objects.filter(placed_at__gt=T0).values_list("customer_id", flat=True))
    from alerts.models import AuditEntry

    assert AuditEntry.objects.filter(action="intervention_outcome").count() == 20 + 2  # the first run's two too


def test_the_scores_of_one_model_at_one_as_of_are_found_through_an_index() -> None:
    version = ModelVersion.objects.create(name="eff-mv", model_type="logreg", status="ready")
    run = _scores([_customer() for _ in range(3)], version, runs=3)
    plan = _queryset_plan(ChurnScore.objects.filter(model_version=version, as_of=run.as_of).values("customer_id"))
    # Either new index finds them by as_of (SQLite picks one or the other on a small table); the model's
    # foreign-key index alone read every score the model ever stored.
    assert any(
        _uses_index(plan, "predictions_churnscore", name) for name in ("score_model_as_of", "score_as_of_probability")
    ), plan
    with connection.cursor() as cursor:  # and the index made for it is there
        indexes = connection.introspection.get_constraints(cursor, "predictions_churnscore")
    assert indexes["score_model_as_of"]["columns"] == ["model_version_id", "as_of"]


def test_the_newest_scores_are_found_from_the_customers_not_from_every_score_ever_stored() -> None:
    customers = [_customer() for _ in range(4)]
    version = ModelVersion.objects.create(name="eff-mv", model_type="logreg", status="ready")
    newest = _scores(customers, version, runs=3)
    assert {s.as_of for s in latest_scores()} == {newest.as_of} and latest_scores().count() == 4
    plan = _queryset_plan(latest_scores())
    assert _uses_index(plan, "predictions_churnscore", "score_customer_newest"), plan
    # It was a correlated subquery per score: SQLite "SCAN predictions_churnscore" with a "CORRELATED SCALAR
    # SUBQUERY", PostgreSQL a filter "id = (SubPlan 1)" on the scores.
    if connection.vendor == "sqlite":
        assert not re.search(r"^SCAN predictions_churnscore", plan, re.MULTILINE), plan
    else:
        assert not re.search(r"Filter: \(+id = \(SubPlan", plan), plan
        assert re.search(r"on customers_customer", plan), plan


def test_a_customers_newest_score_is_read_from_an_index_in_its_full_order_without_a_sort() -> None:
    """Every newest-score lookup (customer list, score list, dashboard: one per customer) orders by as_of, then
    creation, then id. The index on (customer, -as_of) left the tie-breakers to a sort in each lookup: on 50,000
    customers the customer list took 487 ms (343 ms of it PostgreSQL's JIT, which the sorts' cost estimate set off)
    and the score list 396 ms; with the index in the full order 125 ms and 187 ms."""
    customer = _customer()
    version = ModelVersion.objects.create(name="eff-mv", model_type="logreg", status="ready")
    _scores([customer], version, runs=3)
    newest = ChurnScore.objects.filter(customer=customer).order_by("-as_of", "-created_at", "-id").values("pk")[:1]
    plan = _queryset_plan(newest)
    assert _uses_index(plan, "predictions_churnscore", "score_customer_newest"), plan
    if connection.vendor == "sqlite":
        assert "TEMP B-TREE" not in plan, plan
    else:
        assert not re.search(r"\bSort\b", plan), plan


def test_a_page_of_the_score_api_reads_the_scores_in_its_order_through_an_index_and_sorts_nothing() -> None:
    """The score API's page (newest score of each customer, highest risk first) found every customer's newest score,
    sorted them all and counted them again for the paginator: 264 ms (count) + 941 ms (page) on a 50,000-customer
    store with two scores each; read from the score_probability index, stopping after its rows, 0.8 ms."""
    customers = [_customer() for _ in range(4)]
    version = ModelVersion.objects.create(name="eff-mv", model_type="logreg", status="ready")
    newest = _scores(customers, version, runs=3)
    assert sorted(s.pk for s in latest_scores_for_pages()) == sorted(s.pk for s in latest_scores())
    assert {s.as_of for s in latest_scores_for_pages()} == {newest.as_of}
    plan = _queryset_plan(latest_scores_for_pages()[:51])
    assert _uses_index(plan, "predictions_churnscore", "score_probability"), plan
    assert not _sorts_or_scans(plan, "predictions_churnscore"), plan


@pytest.mark.parametrize(
    ("queryset", "table"),
    [
        (lambda: ChurnScore.objects.order_by("-as_of", "-probability")[:50], "predictions_churnscore"),
        (lambda: Alert.objects.order_by("-as_of", "-expected_loss", "-id")[:50], "alerts_alert"),
        (lambda: Intervention.objects.order_by("-created_at")[:50], "alerts_intervention"),
    ],
)
def test_a_page_of_a_big_list_in_its_default_order_is_read_through_an_index(
    queryset: Callable[[], QuerySet], table: str
) -> None:
    plan = _queryset_plan(queryset())
    assert not _sorts_or_scans(plan, table), plan


@pytest.mark.parametrize(
    ("queryset", "column"),
    [
        (lambda rule, at: Alert.objects.filter(rule=rule, as_of__gt=at).values_list("customer_id", "as_of"), "as_of"),
        (lambda rule, at: Alert.objects.filter(rule=rule, period_start__in=[at.date()]).values("id"), "period_start"),
        (lambda rule, at: Alert.objects.filter(created_at__gte=at).values("id"), "created_at"),
    ],
)
def test_rule_application_and_the_dashboard_find_recent_alerts_through_an_index(
    queryset: Callable[[AlertRule, datetime], QuerySet], column: str
) -> None:
    rule = AlertRule.objects.create(name="eff-apply", action=ActionKind.NONE, holdout_fraction=0)
    customers = [_customer() for _ in range(5)]
    Alert.objects.bulk_create(  # 60 days of alerts: with statistics, a planner weighs the indexes by what they hold
        Alert(
            customer=c, rule=rule, period_start=(T0 - timedelta(days=d)).date(), as_of=T0 - timedelta(days=d),
            probability=0.7, risk_tier="high",
        )
        for d in range(60)
        for c in customers
    )  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE alerts_alert" if connection.vendor == "postgresql" else "ANALYZE")
    plan = _queryset_plan(queryset(rule, T0 - timedelta(days=2)).order_by())
    assert not _sorts_or_scans(plan, "alerts_alert"), plan
    # The filtered column is a condition of the index, not a filter on the rows an index on the rule alone gives.
    if connection.vendor == "sqlite":
        assert re.search(rf"USING (COVERING )?INDEX \w+ \((rule_id=\? AND )?{column}[<>=]", plan), plan
    else:
        assert re.search(rf"Index Cond: .*{column} [<>=]", plan), plan


def test_the_dashboards_alerts_per_day_bound_the_column_itself(admin_client) -> None:  # noqa: ANN001
    per_day = [
        q
        for q in _queries(lambda: admin_client.get("/admin/dashboard/"))
        if 'FROM "alerts_alert"' in q and "GROUP BY" in q
    ]
    assert per_day and all('"alerts_alert"."created_at" >=' in q for q in per_day), per_day


def test_big_admin_lists_count_a_bounded_number_of_rows_and_read_no_whole_table_for_their_filters(
    admin_client,
    monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
) -> None:
    from churnsite.admin_tools import EstimatedCountPaginator

    monkeypatch.setattr(EstimatedCountPaginator, "exact_below", 5)
    customer = _customer(segment="gold")
    Event.objects.bulk_create(
        Event(external_id=f"eff-e-{n}", customer=customer, kind="page_view", occurred_at=T0) for n in range(12)
    )
    rule = AlertRule.objects.create(name="eff-lists", action=ActionKind.NONE, holdout_fraction=0)
    Alert.objects.create(
        customer=customer, rule=rule, period_start=T0.date(), as_of=T0, probability=0.7, risk_tier="high",
        expected_loss=Decimal(1),
    )  # fmt: skip
    for url, table in [
        ("/admin/customers/event/?kind=page_view", "customers_event"),  # it counted every event of the kind
        ("/admin/customers/order/", "customers_order"),
        ("/admin/customers/message/", "customers_message"),
        ("/admin/alerts/auditentry/", "alerts_auditentry"),
        ("/admin/alerts/alert/", "alerts_alert"),
        ("/admin/predictions/churnscore/", "predictions_churnscore"),
    ]:
        queries = _queries(lambda url=url: admin_client.get(url))
        whole = [
            q
            for q in queries
            if f'FROM "{table}"' in q
            and (
                q.startswith(("SELECT DISTINCT", "SELECT MIN(", "SELECT MAX("))
                # SQLite has no planner estimate to fall back on: it counts exactly past the bound
                or (q.startswith("SELECT COUNT(*)") and "LIMIT" not in q and connection.vendor != "sqlite")
            )
        ]
        assert not whole, (url, whole)
    page = admin_client.get("/admin/customers/event/?kind=page_view").context["cl"]
    assert page.result_count >= 5 and len(page.result_list) == 12


def test_every_page_of_a_big_admin_list_stays_reachable(admin_client, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    from churnsite.admin_tools import EstimatedCountPaginator
    from customers.admin import EventAdmin

    monkeypatch.setattr(EstimatedCountPaginator, "exact_below", 5)
    monkeypatch.setattr(EventAdmin, "list_per_page", 3)
    customer = _customer()
    Event.objects.bulk_create(
        Event(external_id=f"eff-p-{n}", customer=customer, kind="page_view", occurred_at=T0) for n in range(12)
    )
    seen = []
    for page in range(4):  # past the bounded count of 5 (it redirected to ?e=1 from the third page on)
        response = admin_client.get("/admin/customers/event/", {"p": page + 1})
        assert response.status_code == 200, (page, response.get("Location"))
        seen += [event.external_id for event in response.context["cl"].result_list]
    assert sorted(seen) == sorted(f"eff-p-{n}" for n in range(12))
    # A planner estimate that falls short (6 of 12): the pages past it can still be opened.
    monkeypatch.setattr("churnsite.admin_tools._planner_rows", lambda queryset: 6)
    seen = []
    for page in range(4):
        response = admin_client.get("/admin/customers/event/", {"p": page + 1})
        assert response.status_code == 200, (page, response.get("Location"))
        seen += [event.external_id for event in response.context["cl"].result_list]
    assert sorted(seen) == sorted(f"eff-p-{n}" for n in range(12))
    assert admin_client.get("/admin/customers/event/", {"p": 9}).context["cl"].result_list.count() == 0


def test_the_newest_score_index_migration_keeps_the_scores_writable_on_postgresql() -> None:
    """predictions 0013 builds its index and drops the one it replaces concurrently: a plain DROP INDEX takes an
    exclusive lock on the scores, waits behind any transaction on them and makes every later query wait too."""
    if connection.vendor != "postgresql":
        pytest.skip("CONCURRENTLY is PostgreSQL's")
    out = io.StringIO()
    call_command("sqlmigrate", "predictions", "0013", stdout=out)
    statements = [line for line in out.getvalue().splitlines() if line.strip().upper().startswith(("CREATE", "DROP"))]
    assert len(statements) == 2 and all("CONCURRENTLY" in s.upper() for s in statements), out.getvalue()
    backwards = io.StringIO()
    call_command("sqlmigrate", "predictions", "0013", backwards=True, stdout=backwards)
    assert backwards.getvalue().upper().count("CONCURRENTLY") == 2, backwards.getvalue()


@pytest.mark.parametrize(("app", "migration"), [("predictions", "0015"), ("customers", "0005")])
def test_the_newer_index_migrations_build_and_drop_their_index_concurrently_on_postgresql(
    app: str, migration: str
) -> None:
    """predictions 0015 (the score API's pages) and customers 0005 (the message search) build their index without
    blocking the writes of scoring runs and imports."""
    if connection.vendor != "postgresql":
        pytest.skip("CONCURRENTLY is PostgreSQL's")
    for backwards in (False, True):
        out = io.StringIO()
        call_command("sqlmigrate", app, migration, backwards=backwards, stdout=out)
        statements = [
            line for line in out.getvalue().splitlines() if line.strip().upper().startswith(("CREATE", "DROP"))
        ]
        assert len(statements) == 1 and "CONCURRENTLY" in statements[0].upper(), out.getvalue()


def _rows_returned(sql: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return len(cursor.fetchall())


def test_recording_outcomes_reads_no_row_per_order_or_event_of_the_customers() -> None:
    # The check "has this customer any order or event at all" (profile data is judged by its churn flag) was a
    # DISTINCT over customer_id that the models' default ordering widened to (customer_id, placed_at) and
    # (customer_id, occurred_at): it returned every order and every event of the chunk's customers (85,073 rows for
    # 1,000 customers of a 50,000-customer demo store, 0.6 s per chunk), not one row per customer.
    _due_interventions(2)
    busy = Intervention.objects.order_by("pk").first().customer
    Order.objects.bulk_create(
        Order(external_id=f"eff-o-{next(_SEQ)}", customer=busy, placed_at=T0 - timedelta(days=20, hours=i), amount=1)
        for i in range(30)
    )
    Event.objects.bulk_create(
        Event(external_id=f"eff-e-{next(_SEQ)}", customer=busy, kind="page_view", occurred_at=T0 - timedelta(hours=i))
        for i in range(30)
    )
    queries = _queries(lambda: intervention_outcomes_record(now=T0 + timedelta(days=2)))
    activity = [sql for sql in queries if sql.lstrip().upper().startswith("SELECT") and re.search(
        r"customers_(order|event)", sql)]  # fmt: skip
    assert activity
    rows = {sql: _rows_returned(sql) for sql in activity}
    assert all(count <= 2 for count in rows.values()), rows  # two customers: at most a row each
    assert Intervention.objects.filter(outcome="unknown").count() == 0


def test_applying_a_rule_reads_the_factors_of_the_scores_it_alerts_on_only() -> None:
    # The rule read every score's top factors (with the customer's attributes) to rank them, though only the alerted
    # scores keep them: on a 50,000-customer store 119 MiB of the rows it held for 47,437 scores were factors, for
    # 2,372 alerts (top 5%). The factors are now read for the chosen scores, after the ranking.
    from alerts.services import alert_rule_apply

    factors = [{"factor": "days since the last order", "weight": 1.5, "evidence": "x" * 200, "direction": "raises"}]
    customers = [_customer() for _ in range(12)]
    version = ModelVersion.objects.create(name="eff-factors", model_type="bench", status="ready")
    run = _scores(customers, version, runs=1)
    ChurnScore.objects.filter(scoring_run=run).update(top_factors=factors)
    rule = AlertRule.objects.create(
        name="eff-factors", trigger="top_n", top_n=2, action=ActionKind.NONE, holdout_fraction=0, cooldown_days=30
    )
    scores = ChurnScore.objects.filter(scoring_run=run)
    queries = _queries(lambda: alert_rule_apply(rule=rule, scores=scores, actor="test"))
    reading_factors = [sql for sql in queries if sql.lstrip().upper().startswith("SELECT") and "top_factors" in sql]
    rows = {sql: _rows_returned(sql) for sql in reading_factors}
    assert rows and all(count <= 2 for count in rows.values()), rows
    assert sorted(len(a.top_factors) for a in Alert.objects.filter(rule=rule)) == [1, 1]
