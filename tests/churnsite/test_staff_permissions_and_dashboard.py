"""Admin actions need the change permission, the dashboard draws any segment name and counts and dates in local
time, the schedule shows when beat runs each task next, and the panels cost the same queries for any number of rows."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask, SolarSchedule
from django_celery_beat.schedulers import ModelEntry

from alerts.models import Alert, AlertStatus, AuditEntry, Intervention
from churnsite.dashboard import selectors
from customers.models import Customer
from customers.services import customer_opt_out
from predictions.models import DriftEvent, ModelVersion
from predictions.selectors import champion_model_version
from predictions.services import model_version_promote, model_version_register
from tests.customers.test_admin import T0, _alert, _model_version, _rule, _score
from tests.model_versions import artifact_dir

pytestmark = pytest.mark.django_db


def _dashboard_queries(client) -> int:  # noqa: ANN001
    with CaptureQueriesContext(connection) as captured:
        assert client.get("/admin/dashboard/").status_code == 200
    return len(captured)


def _beat_next_run(task: PeriodicTask, now: datetime) -> datetime:
    """When django-celery-beat itself would run ``task`` (its entry measures from the real clock, close to ``now``)."""
    due, seconds = ModelEntry(task).is_due()
    return now if due else now + timedelta(seconds=seconds)


def _staff(django_user_model, name: str, *permissions: str):  # noqa: ANN001, ANN202
    user = django_user_model.objects.create_user(name, password="pw-for-tests-123", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=permissions))
    return user


def test_promoting_and_rolling_back_a_model_needs_the_change_permission(client, django_user_model) -> None:  # noqa: ANN001
    first, second = (
        model_version_register(
            name=n,
            model_type="hybrid",
            metrics={"roc_auc": 0.8},
            holdout_key="h",
            actor="t",
            artifact_path=artifact_dir(),
        )
        for n in ("m1", "m2")
    )
    model_version_promote(model_version=first, actor="setup")
    changelist = "/admin/predictions/modelversion/"
    promote = {"action": "promote_selected", "_selected_action": [second.pk]}

    client.force_login(_staff(django_user_model, "nobody"))
    assert client.get(changelist).status_code == 403
    client.post(changelist, promote)
    client.force_login(_staff(django_user_model, "viewer", "view_modelversion"))
    assert client.get(changelist).status_code == 200
    client.post(changelist, promote)
    assert champion_model_version() == first

    client.force_login(_staff(django_user_model, "ops", "view_modelversion", "change_modelversion"))
    client.post(changelist, promote)
    assert champion_model_version() == second


def test_view_only_staff_can_neither_act_on_alerts_nor_opt_customers_out(client, django_user_model) -> None:  # noqa: ANN001
    customer = Customer.objects.create(external_id="c-2", name="Rita", email="r@example.com", marketing_consent=True)
    alert = _alert(customer, _rule(), _score(customer, _model_version(), 0.8, T0))
    client.force_login(_staff(django_user_model, "viewer", "view_alert", "view_customer"))

    for action in ("send_coupon", "dismiss", "acknowledge"):
        client.post(reverse("admin:alerts_alert_changelist"), {"action": action, "_selected_action": [alert.pk]})
    client.post(
        reverse("admin:customers_customer_changelist"),
        {"action": "opt_out_customers", "_selected_action": [customer.pk]},
    )

    alert.refresh_from_db()
    customer.refresh_from_db()
    assert alert.status == AlertStatus.OPEN and not Intervention.objects.exists()
    assert customer.opted_out_at is None


def test_the_change_form_cannot_undo_an_opt_out(admin_client) -> None:  # noqa: ANN001
    customer = Customer.objects.create(external_id="c-1", name="Eve", email="e@example.com", marketing_consent=True)
    customer_opt_out(customer=customer)
    customer.refresh_from_db()
    data = {
        "external_id": "c-1", "name": "Eve (typo fixed)", "email": "e@example.com", "segment": "", "country": "",
        "language": "en", "signed_up_at_0": "", "signed_up_at_1": "", "marketing_consent": "on",
        "opted_out_at_0": "", "opted_out_at_1": "", "churned": "unknown", "churned_at_0": "", "churned_at_1": "",
        "attributes": "{}", "_save": "Save",
    }  # fmt: skip

    response = admin_client.post(reverse("admin:customers_customer_change", args=[customer.pk]), data)

    opted_out_at = customer.opted_out_at
    customer.refresh_from_db()
    assert response.status_code == 302 and customer.name == "Eve (typo fixed)"
    assert customer.opted_out_at == opted_out_at and not customer.can_be_contacted


@pytest.mark.parametrize("segment", ["VIP ($$)", "spend_$10_to_$20", "$5k-$10k"])
def test_the_dashboard_draws_segment_names_with_dollar_signs(admin_client, segment: str) -> None:  # noqa: ANN001
    customer = Customer.objects.create(external_id="c1", name="n", email="e@e.com", segment=segment)
    _score(customer, _model_version(), 0.7, T0)

    response = admin_client.get("/admin/dashboard/")

    assert response.status_code == 200


def test_alerts_per_day_counts_in_the_local_time_zone(settings) -> None:  # noqa: ANN001
    settings.TIME_ZONE = "Asia/Shanghai"
    customer = Customer.objects.create(external_id="c1", name="n", email="e@e.com")
    now = datetime(2026, 3, 9, 17, 0, tzinfo=UTC)  # 01:00 on 10 March in Shanghai
    alert = _alert(customer, _rule(), _score(customer, _model_version(), 0.7, T0))
    Alert.objects.filter(pk=alert.pk).update(created_at=now - timedelta(minutes=30))  # 00:30 local, today

    with timezone.override("Asia/Shanghai"):
        days = selectors.alerts_per_day(days=3, now=now)

    assert days[-1] == (datetime(2026, 3, 10).date(), 1)


def test_the_next_run_of_a_task_that_ran_before_is_one_interval_after_it() -> None:
    now = datetime(2026, 3, 10, 6, 39, tzinfo=UTC)
    every_day = IntervalSchedule.objects.create(every=24, period=IntervalSchedule.HOURS)
    at_three = CrontabSchedule.objects.create(minute="0", hour="3", timezone="UTC")
    PeriodicTask.objects.create(name="interval", task="x", interval=every_day, last_run_at=now - timedelta(hours=6))
    PeriodicTask.objects.create(name="crontab", task="x", crontab=at_three, last_run_at=now.replace(hour=3, minute=0))

    runs = {run.name: run.next_run_at for run in selectors.scheduled_runs(now=now)}

    assert runs["interval"] == now + timedelta(hours=18)
    assert runs["crontab"] == datetime(2026, 3, 11, 3, 0, tzinfo=UTC)


def test_a_never_run_task_counts_from_when_it_was_saved_as_beat_does() -> None:
    now = timezone.now()
    every_day = IntervalSchedule.objects.create(every=24, period=IntervalSchedule.HOURS)
    task = PeriodicTask.objects.create(name="daily job", task="x", interval=every_day)
    PeriodicTask.objects.filter(pk=task.pk).update(date_changed=now - timedelta(hours=20))
    task.refresh_from_db()

    runs = {run.name: run.next_run_at for run in selectors.scheduled_runs(now=now)}

    beat = _beat_next_run(task, now)  # 24 hours after it was saved: in 4 hours, not in 24
    assert abs((runs["daily job"] - beat).total_seconds()) < 5, (runs["daily job"], beat)


def test_a_task_with_a_future_start_time_runs_next_at_its_start_time() -> None:
    now = timezone.now()
    hourly = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.HOURS)
    task = PeriodicTask.objects.create(
        name="starts later", task="x", interval=hourly, start_time=now + timedelta(days=5)
    )

    runs = {run.name: run.next_run_at for run in selectors.scheduled_runs(now=now)}

    beat = _beat_next_run(task, now)
    assert abs((runs["starts later"] - (now + timedelta(days=5))).total_seconds()) < 1, runs["starts later"]
    assert abs((runs["starts later"] - beat).total_seconds()) < 5, (runs["starts later"], beat)


def test_an_enabled_solar_schedule_shows_no_next_run_and_the_dashboard_renders(admin_client) -> None:  # noqa: ANN001
    sunrise = SolarSchedule.objects.create(event="sunrise", latitude=52.5, longitude=13.4)
    PeriodicTask.objects.create(name="morning digest", task="alerts.tasks.x", solar=sunrise)  # celery needs ephem

    response = admin_client.get("/admin/dashboard/")

    runs = {run.name: run.next_run_at for run in selectors.scheduled_runs()}
    assert response.status_code == 200 and "morning digest" in response.content.decode()
    assert runs["morning digest"] is None


def test_scheduled_runs_cost_the_same_queries_for_3_or_30_tasks() -> None:
    hourly = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.HOURS)
    at_three = CrontabSchedule.objects.create(minute="0", hour="3", timezone="UTC")

    def add(n: int, batch: str) -> None:
        for i in range(n):
            schedule = {"interval": hourly} if i % 2 else {"crontab": at_three}
            PeriodicTask.objects.create(name=f"task {batch}{i}", task="x", **schedule)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            selectors.scheduled_runs()
        return len(captured)

    add(3, "a")
    few = queries()
    add(27, "b")
    assert queries() == few


def test_uplift_table_costs_the_same_queries_for_2_or_20_rules(admin_client) -> None:  # noqa: ANN001
    customer = Customer.objects.create(external_id="c1", name="n", email="e@e.com")
    score = _score(customer, _model_version(), 0.7, T0)

    def add(n: int, batch: str) -> None:
        for i in range(n):
            rule = _rule(f"rule {batch}{i}")
            Intervention.objects.create(
                alert=_alert(customer, rule, score),
                customer=customer,
                kind=rule.action,
                status="sent",
                sent_at=T0,
                outcome="retained",
                idempotency_key=f"k-{batch}{i}",
            )

    add(2, "a")
    few = _dashboard_queries(admin_client)
    add(18, "b")
    assert _dashboard_queries(admin_client) == few


def test_drift_chart_time_axis_is_in_the_local_time_zone(admin_client, settings) -> None:  # noqa: ANN001
    settings.TIME_ZONE = "Asia/Shanghai"
    version = _model_version(status="champion")
    for day in (9, 10, 11):  # 17:00 UTC is 01:00 the next day in Shanghai: checks on 10, 11 and 12 March local
        event = DriftEvent.objects.create(
            model_version=version, score_psi=0.1, max_psi=0.1, threshold=0.2, drifted=False
        )
        DriftEvent.objects.filter(pk=event.pk).update(checked_at=datetime(2026, 3, day, 17, 0, tzinfo=UTC))

    page = admin_client.get("/admin/dashboard/").content.decode()
    drift = page[page.index("Drift over time") : page.index("Next scheduled runs")]
    ticks = re.findall(r"<!-- (\d\d-\d\d[^>]*?) -->", drift)  # matplotlib writes each tick label as a comment

    assert ticks and not any(tick.startswith("03-09") for tick in ticks), f"UTC tick labels: {ticks}"


def test_backtest_cutoffs_are_shown_as_local_dates(settings) -> None:  # noqa: ANN001
    settings.TIME_ZONE = "Asia/Shanghai"
    # Local midnights of 1 February, 1 March and 1 April 2026, stored as training writes them (run.as_of is UTC).
    version = ModelVersion.objects.create(
        name="champ",
        model_type="lightgbm",
        status="champion",
        horizon_days=30,
        training_cutoffs=["2026-03-31T16:00:00+00:00", "2026-02-28T16:00:00+00:00", "2026-01-31T16:00:00+00:00"],
        metrics={"roc_auc": 0.8, "n": 100, "positive_rate": 0.2, "cutoff": "2026-03-31T16:00:00+00:00"},
    )

    with timezone.override("Asia/Shanghai"):
        figures = dict(selectors.model_card(version).figures)

    assert (figures["Training cutoffs"], figures["Holdout cutoff (backtest)"]) == (
        "2026-03-01, 2026-02-01",
        "2026-04-01",
    ), figures


@pytest.mark.parametrize("page", ["/admin/alerts/auditentry/", "/admin/predictions/driftevent/"])
def test_audit_and_drift_lists_cost_the_same_queries_for_5_or_50_rows(admin_client, page: str) -> None:  # noqa: ANN001
    from predictions.models import DriftEvent, TrainingRun

    version = _model_version()
    rule = _rule()
    customer = Customer.objects.create(external_id="c1", name="n", email="e@e.com")
    alert = _alert(customer, rule, _score(customer, version, 0.7, T0))

    def add(n: int) -> None:
        for _ in range(n):
            run = TrainingRun.objects.create(mode="lightgbm", as_of=T0, horizon_days=30)
            DriftEvent.objects.create(
                model_version=version, score_psi=0.1, max_psi=0.1, threshold=0.2, drifted=False, training_run=run
            )
            AuditEntry.objects.create(actor="t", action="x", rule=rule, alert=alert)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert admin_client.get(page).status_code == 200
        return len(captured)

    add(5)
    few = queries()
    add(45)
    assert queries() == few


def test_card_of_a_model_trained_on_churn_flags_names_the_flag_and_the_customer_holdout() -> None:
    # What training stores for a profile model (churn_train --labels-from flag): one cutoff, the holdout a
    # stratified sample of customers; no order window labels anything, whatever horizon_days says.
    cutoff = "2026-11-30T11:24:17.619984+00:00"
    version = ModelVersion.objects.create(
        name="profile",
        model_type="lightgbm",
        status="champion",
        horizon_days=60,
        config={"labels_from": "flag", "activity": "orders"},
        training_cutoffs=[cutoff],
        metrics={"roc_auc": 0.85, "n": 1409, "positive_rate": 0.265, "cutoff": f"{cutoff} (customers)"},
        model_card={
            "holdout": {"cutoff": f"{cutoff} (customers)", "n": 1409, "positives": 374},
            "training": {"cutoffs": [cutoff], "n": 5634, "positives": 1495},
        },
    )

    with timezone.override("UTC"):
        figures = dict(selectors.model_card(version).figures)

    assert "order" not in figures["Churn definition"] and "churn flag" in figures["Churn definition"], figures
    assert figures["Holdout cutoff (backtest)"] == "2026-11-30 (a sample of customers)", figures
    assert figures["Training cutoffs"] == "2026-11-30", figures
