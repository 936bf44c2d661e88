"""Outcomes of treated and control customers: by new orders for customers with orders, by the churn flag for
profile data (a bank's or an insurer's customers have no orders), and an explicit churn time in the window wins."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from alerts.models import ActionKind, Alert, Intervention, InterventionStatus, Outcome
from alerts.selectors import alert_rule_uplift
from alerts.services import alert_rule_apply, holdout_assigned, intervention_outcomes_record
from customers.models import Customer, Event
from predictions.models import ChurnScore
from tests.alerts.helpers import customer_make, model_version_make, order_make, score_make, scoring_run_make
from tests.alerts.test_services import rule_make
from tests.customers.test_import_command import run_import

pytestmark = pytest.mark.django_db

DISPATCH = datetime(2026, 3, 10, 12, tzinfo=timezone.get_fixed_timezone(0))


def _treated(customer: Customer, rule) -> Intervention:  # noqa: ANN001
    alert = Alert.objects.create(
        customer=customer, rule=rule, period_start=DISPATCH.date(), as_of=DISPATCH, probability=0.9, risk_tier="high"
    )
    intervention = Intervention.objects.create(
        alert=alert, customer=customer, kind=ActionKind.COUPON_EMAIL, status=InterventionStatus.SENT,
        sent_at=DISPATCH, idempotency_key=f"outcome-{customer.pk}",
    )  # fmt: skip
    Intervention.objects.filter(pk=intervention.pk).update(created_at=DISPATCH)
    return intervention


@pytest.mark.parametrize(
    ("orders", "event", "churned", "churned_at", "expected"),
    [
        # Customers with orders: a completed order in (dispatch, dispatch + horizon] keeps them.
        ([-40, 5], False, False, None, Outcome.RETAINED),
        ([-40], False, False, None, Outcome.CHURNED),
        ([-40, 31], False, False, None, Outcome.CHURNED),
        # ... unless they are known to have left inside the window, which wins (as for labels).
        ([-40, 5], False, True, 20, Outcome.CHURNED),
        ([-40, 5], False, True, 45, Outcome.RETAINED),
        # Events only: activity data too, judged by orders as before (no order in the window).
        ([], True, False, None, Outcome.CHURNED),
        # Profile data (no orders, no events): the churn flag says it.
        ([], False, False, None, Outcome.RETAINED),
        ([], False, True, 10, Outcome.CHURNED),
        ([], False, True, None, Outcome.CHURNED),
        ([], False, True, -3, Outcome.CHURNED),
        ([], False, True, 45, Outcome.RETAINED),  # left after the window
    ],
)
def test_an_outcome_reads_orders_or_the_churn_flag(orders, event, churned, churned_at, expected) -> None:  # noqa: ANN001
    customer = customer_make(1)
    for day in orders:
        order_make(customer, amount="10", placed_at=DISPATCH + timedelta(days=day))
    if event:
        Event.objects.create(
            external_id=f"e{customer.pk}", customer=customer, kind="login", occurred_at=DISPATCH - timedelta(days=3)
        )
    Customer.objects.filter(pk=customer.pk).update(
        churned=churned, churned_at=DISPATCH + timedelta(days=churned_at) if churned_at is not None else None
    )
    intervention = _treated(customer, rule_make(horizon_days=30))

    intervention_outcomes_record(now=DISPATCH + timedelta(days=31))

    intervention.refresh_from_db()
    assert intervention.outcome == expected


def test_a_profile_datasets_uplift_counts_the_flag_not_missing_orders(
    settings,  # noqa: ANN001
    django_capture_on_commit_callbacks,  # noqa: ANN001
) -> None:
    # Bank customers have no orders: every one of them used to be recorded as churned, so the uplift was 0.
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    csv = "customer_id,email,marketing_consent,product,balance,Attrited\n"
    csv += "".join(f"B{i},b{i}@example.com,yes,gold card,{1000 + i},No\n" for i in range(60))
    run_import("customers", csv, label_column="Attrited", positive_label="Yes")
    run = scoring_run_make(model_version_make(), at=timezone.now())
    for customer in Customer.objects.order_by("pk"):
        score_make(customer, run, 0.9)
    rule = rule_make(horizon_days=30, holdout_fraction=0.5)
    with django_capture_on_commit_callbacks(execute=True):
        alert_rule_apply(rule=rule, scores=ChurnScore.objects.filter(scoring_run=run), actor="t")
    treated = Intervention.objects.filter(status=InterventionStatus.SENT)
    control = Intervention.objects.filter(status=InterventionStatus.HOLDOUT)
    assert treated.exists() and control.exists()
    dispatched = Intervention.objects.order_by("created_at").first().created_at
    # Every control customer closes the account 10 days later; every treated customer stays.
    Customer.objects.filter(pk__in=control.values("customer_id")).update(
        churned=True, churned_at=dispatched + timedelta(days=10)
    )

    intervention_outcomes_record(now=dispatched + timedelta(days=31))

    assert set(treated.values_list("outcome", flat=True)) == {Outcome.RETAINED}
    assert set(control.values_list("outcome", flat=True)) == {Outcome.CHURNED}
    report = alert_rule_uplift(rule=rule)
    assert report.difference == pytest.approx(1.0)


def test_a_repeat_inside_the_outcome_window_is_sent_but_not_counted_on_either_side(
    settings,  # noqa: ANN001
    django_capture_on_commit_callbacks,  # noqa: ANN001
) -> None:
    # Defaults: the rule alerts again after 30 days, its outcome window is 60 days. The treated customer got a
    # second coupon, counted as a second treated outcome, while the control customer's repeat was left out: two
    # customers who behave alike showed treated 50% against control 100%.
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    rule = rule_make(cooldown_days=30, horizon_days=60, holdout_fraction=0.5)
    treated = control = None
    for n in range(1, 200):
        customer = customer_make(n)
        if holdout_assigned(customer_id=customer.pk, rule_id=rule.pk, fraction=0.5):
            control = control or customer
        else:
            treated = treated or customer
        if treated and control:
            break
    now = timezone.now()
    model = model_version_make()
    for days_ago in (30, 0):
        run = scoring_run_make(model, at=now - timedelta(days=days_ago))
        for customer in (treated, control):
            score_make(customer, run, 0.9)
            if days_ago == 30:  # both order 10 days after the first alert, nothing after
                order_make(customer, amount="50", placed_at=now - timedelta(days=40))
                order_make(customer, amount="50", placed_at=now - timedelta(days=20))
        with django_capture_on_commit_callbacks(execute=True):
            alert_rule_apply(rule=rule, scores=ChurnScore.objects.filter(scoring_run=run), actor="t")
        if days_ago == 30:  # that dispatch happened 30 days ago
            Intervention.objects.update(created_at=now - timedelta(days=30), sent_at=now - timedelta(days=30))

    repeat = Intervention.objects.get(customer=treated, created_at__gt=now - timedelta(days=1))
    assert repeat.status == InterventionStatus.SENT and repeat.outcome == Outcome.NOT_MEASURED  # it went out
    held = Intervention.objects.get(customer=control, created_at__gt=now - timedelta(days=1))
    assert held.status == InterventionStatus.SUPPRESSED  # its own control window is open

    intervention_outcomes_record(now=now + timedelta(days=61))

    report = alert_rule_uplift(rule=rule)
    assert (report.treated, report.control) == (1, 1), report
    assert report.treated_rate == report.control_rate == 1.0, report
    assert Intervention.objects.get(pk=repeat.pk).outcome == Outcome.NOT_MEASURED


def test_changing_a_rules_action_keeps_the_uplift_it_measured(
    settings,  # noqa: ANN001
    django_capture_on_commit_callbacks,  # noqa: ANN001
) -> None:
    # The report counted interventions of the rule's current action: editing a coupon rule to "alert only" made
    # every coupon it sent, and its control group, vanish from its uplift and the dashboard.
    from alerts.selectors import alert_rules_uplift
    from alerts.services import alert_rule_update

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    rule = rule_make(horizon_days=30, holdout_fraction=0.5)
    run = scoring_run_make(model_version_make(), at=timezone.now())
    for n in range(12):
        score_make(customer_make(n), run, 0.9)
    with django_capture_on_commit_callbacks(execute=True):
        alert_rule_apply(rule=rule, scores=ChurnScore.objects.filter(scoring_run=run), actor="t")
    dispatched = Intervention.objects.order_by("created_at").first().created_at
    intervention_outcomes_record(now=dispatched + timedelta(days=31))
    before = alert_rule_uplift(rule=rule)
    assert before.treated > 0 and before.control > 0

    rule = alert_rule_update(rule=rule, actor="staff", action=ActionKind.NONE)

    assert alert_rule_uplift(rule=rule) == before == alert_rules_uplift(rules=[rule])[rule.pk]


def test_the_migration_marks_earlier_interventions_of_the_rules_action_as_its_own() -> None:
    import importlib

    from django.apps import apps
    from django.db import connection

    migration = importlib.import_module("alerts.migrations.0008_intervention_by_rule")
    coupon_rule = rule_make(name="coupon")
    webhook_rule = rule_make(name="webhook", action=ActionKind.WEBHOOK, webhook_url="https://crm.example.com/hook")
    made = {}
    for n, (rule, kind) in enumerate(
        [(coupon_rule, ActionKind.COUPON_EMAIL), (webhook_rule, ActionKind.WEBHOOK), (webhook_rule, "coupon_email")]
    ):
        intervention = _treated(customer_make(n), rule)
        Intervention.objects.filter(pk=intervention.pk).update(kind=kind, by_rule=False)
        made[(rule.name, kind)] = intervention.pk

    migration.mark_rule_actions(apps, connection.schema_editor())

    marked = dict(Intervention.objects.values_list("pk", "by_rule"))
    assert {key: marked[pk] for key, pk in made.items()} == {
        ("coupon", "coupon_email"): True,
        ("webhook", "webhook"): True,
        ("webhook", "coupon_email"): False,  # a coupon sent by hand on a webhook rule's alert
    }
