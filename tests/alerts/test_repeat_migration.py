"""Repeats stored before the ``not_measured`` outcome existed are marked by the migration as the dispatch marks
them now: otherwise the outcomes task measures them and each counts as a second treated outcome (the bias 0007
removed for new actions only)."""

from __future__ import annotations

import importlib
from datetime import datetime, timedelta

import pytest
from django.apps import apps
from django.db import connection
from django.utils import timezone

from alerts.models import ActionKind, Alert, AlertRule, Intervention, InterventionStatus, Outcome
from alerts.selectors import alert_rule_uplift
from customers.models import Customer
from tests.alerts.helpers import customer_make
from tests.alerts.test_services import rule_make

pytestmark = pytest.mark.django_db

DAY0 = datetime(2026, 3, 1, 12, tzinfo=timezone.get_fixed_timezone(0))


def _made(
    customer: Customer,
    rule: AlertRule,
    day: int,
    status: str = InterventionStatus.SENT,
    *,
    outcome: str = Outcome.UNKNOWN,
    reason: str = "",
    kind: str = ActionKind.COUPON_EMAIL,
    alert: Alert | None = None,
) -> Intervention:
    at = DAY0 + timedelta(days=day)
    if alert is None:
        alert = Alert.objects.create(
            customer=customer, rule=rule, period_start=at.date(), as_of=at, probability=0.9, risk_tier="high"
        )
    intervention = Intervention.objects.create(
        alert=alert, customer=customer, kind=kind, status=status, reason=reason, outcome=outcome,
        sent_at=at if status == InterventionStatus.SENT else None, by_rule=kind == rule.action,
        idempotency_key=f"{kind}:rule-{rule.pk}:customer-{customer.pk}:{at.date()}",
    )  # fmt: skip
    Intervention.objects.filter(pk=intervention.pk).update(created_at=at)
    return intervention


def test_the_migration_marks_repeats_made_before_the_outcome_existed_as_not_measured() -> None:
    migration = importlib.import_module("alerts.migrations.0009_mark_earlier_repeats_not_measured")
    rule = rule_make(horizon_days=60, holdout_fraction=0.5)
    other_rule = rule_make(name="other", horizon_days=60)
    c = [customer_make(n) for n in range(9)]
    expected = {
        # A repeat 30 days into the window, already measured (as the outcomes task did): not measured. The next one
        # after the first window closed is measured (the repeat opened no window).
        _made(c[0], rule, 0, outcome=Outcome.RETAINED).pk: Outcome.RETAINED,
        _made(c[0], rule, 30, outcome=Outcome.RETAINED).pk: Outcome.NOT_MEASURED,
        _made(c[0], rule, 70).pk: Outcome.UNKNOWN,
        # A control group repeat of a treated customer: not measured, as the dispatch marks it.
        _made(c[1], rule, 0).pk: Outcome.UNKNOWN,
        _made(c[1], rule, 10, InterventionStatus.HOLDOUT).pk: Outcome.NOT_MEASURED,
        # Suppressed at dispatch (cooldown): neither treated nor a repeat; suppressed at send time: a repeat.
        _made(c[2], rule, 0).pk: Outcome.UNKNOWN,
        _made(c[2], rule, 10, InterventionStatus.SUPPRESSED, reason="customer contacted within the cooldown").pk: (
            Outcome.UNKNOWN
        ),
        _made(c[2], rule, 20, InterventionStatus.SUPPRESSED, reason="at send time: opted out").pk: (
            Outcome.NOT_MEASURED
        ),
        # A control customer opens no treated window.
        _made(c[3], rule, 0, InterventionStatus.HOLDOUT).pk: Outcome.UNKNOWN,
        _made(c[3], rule, 10).pk: Outcome.UNKNOWN,
        # Another rule's treatment is not this rule's window.
        _made(c[4], other_rule, 0).pk: Outcome.UNKNOWN,
        _made(c[4], rule, 10).pk: Outcome.UNKNOWN,
        # A failed send was meant to treat (intention to treat): it opens the window.
        _made(c[5], rule, 0, InterventionStatus.FAILED).pk: Outcome.UNKNOWN,
        _made(c[5], rule, 59).pk: Outcome.NOT_MEASURED,
        # Exactly at the end of the window: a new treatment.
        _made(c[6], rule, 0).pk: Outcome.UNKNOWN,
        _made(c[6], rule, 60).pk: Outcome.UNKNOWN,
    }
    # Marked by a dispatch after 0007 because the unmarked repeat before it (day 30) seemed to hold the window open:
    # with day 30 a repeat, day 70 starts a new window, and goes back to be measured.
    expected[_made(c[8], rule, 0).pk] = Outcome.UNKNOWN
    expected[_made(c[8], rule, 30).pk] = Outcome.NOT_MEASURED
    expected[_made(c[8], rule, 70, outcome=Outcome.NOT_MEASURED).pk] = Outcome.UNKNOWN
    # Two actions on one alert (a coupon by hand on top of the rule's) are not each other's repeat.
    first = _made(c[7], rule, 0)
    expected[first.pk] = Outcome.UNKNOWN
    expected[_made(c[7], rule, 0, kind=ActionKind.WEBHOOK, alert=first.alert).pk] = Outcome.UNKNOWN

    migration.mark_earlier_repeats(apps, connection.schema_editor())

    outcomes = dict(Intervention.objects.values_list("pk", "outcome"))
    assert {pk: outcomes[pk] for pk in expected} == expected
    report = alert_rule_uplift(rule=rule)
    assert (report.treated, report.control) == (1, 0), report  # c[0]'s first, once

    migration.mark_earlier_repeats(apps, connection.schema_editor())  # again: nothing changes
    assert dict(Intervention.objects.values_list("pk", "outcome")) == outcomes
