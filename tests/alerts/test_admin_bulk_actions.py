"""The alert queue's bulk actions on a large selection ("select all" across pages): a fixed number of queries per
chunk of alerts, not a transaction and several queries per alert (on a store of 50,000 customers, acknowledging
2,382 alerts took 11.5 s and 9,000+ queries, sending their coupons 25 s), with the same outcome and audit trail
as the one-alert services."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from alerts.models import (
    ActionKind,
    Alert,
    AlertRule,
    AlertStatus,
    AuditEntry,
    DailySendCounter,
    Intervention,
    InterventionStatus,
)
from customers.models import Customer
from tests.customers.test_admin import T0, _alert, _model_version, _rule, _score

pytestmark = pytest.mark.django_db

_SEQ = itertools.count()


def _alerts(rule: AlertRule, n: int, **fields: object) -> list[Alert]:
    version = _model_version(name=f"bulk-{next(_SEQ)}")
    alerts = []
    for _ in range(n):
        i = next(_SEQ)
        customer = Customer.objects.create(
            external_id=f"bulk-{i}", name=f"Bulk {i}", email=f"bulk{i}@example.com", marketing_consent=True
        )
        alerts.append(_alert(customer, rule, _score(customer, version, 0.8, T0), **fields))
    return alerts


def _run_action(client, action: str, **filters: str):  # noqa: ANN001, ANN202
    """The action on every alert the filtered list holds, as "Select all N alerts" posts it."""
    url = reverse("admin:alerts_alert_changelist")
    query = "&".join(f"{key}={value}" for key, value in filters.items())
    with CaptureQueriesContext(connection) as queries:
        response = client.post(
            f"{url}?{query}" if query else url,
            {"action": action, "select_across": "1", "index": "0", "_selected_action": ["0"]},
        )
    assert response.status_code == 302, response
    return len(queries), [str(m) for m in response.wsgi_request._messages._queued_messages]


@pytest.mark.parametrize("action", ["acknowledge", "dismiss"])
def test_a_bulk_transition_costs_the_same_queries_for_3_or_12_alerts(admin_client, action: str) -> None:  # noqa: ANN001
    few_rule, many_rule = _rule("few"), _rule("many")
    _alerts(few_rule, 3)
    _alerts(many_rule, 12)

    few, _ = _run_action(admin_client, action, rule__id__exact=str(few_rule.pk))
    many, messages = _run_action(admin_client, action, rule__id__exact=str(many_rule.pk))

    assert many == few, f"{few} queries for 3 alerts, {many} for 12: the cost grows with the selection"
    status = AlertStatus.ACKNOWLEDGED if action == "acknowledge" else AlertStatus.DISMISSED
    assert Alert.objects.filter(status=status).count() == 15
    entries = AuditEntry.objects.filter(action="alert_status")
    assert entries.count() == 15
    assert {tuple(sorted(e.details.items())) for e in entries} == {(("from", "open"), ("note", ""), ("to", status))}
    assert entries.filter(actor="user:admin").count() == 15
    assert f"12 alert(s) now {status}." in messages


def test_a_bulk_transition_refuses_alerts_that_cannot_move_and_counts_those_already_there(admin_client) -> None:  # noqa: ANN001
    rule = _rule()
    open_alert, resolved, acknowledged = (
        _alerts(rule, 1)[0],
        _alerts(rule, 1, status=AlertStatus.RESOLVED)[0],
        _alerts(rule, 1, status=AlertStatus.ACKNOWLEDGED)[0],
    )

    _, messages = _run_action(admin_client, "acknowledge")

    assert "2 alert(s) now acknowledged." in messages, messages
    assert f"alert {resolved.pk}: cannot go from resolved to acknowledged" in messages, messages
    statuses = dict(Alert.objects.values_list("pk", "status"))
    assert statuses == {
        open_alert.pk: AlertStatus.ACKNOWLEDGED,
        resolved.pk: AlertStatus.RESOLVED,
        acknowledged.pk: AlertStatus.ACKNOWLEDGED,
    }
    # Only the alert that changed gets an audit entry, as alert_transition one at a time.
    assert list(AuditEntry.objects.filter(action="alert_status").values_list("alert_id", flat=True)) == [open_alert.pk]


def test_bulk_coupons_cost_the_same_queries_for_3_or_12_alerts(
    admin_client, django_capture_on_commit_callbacks
) -> None:  # noqa: ANN001, E501
    few_rule, many_rule = _rule("few"), _rule("many")
    _alerts(few_rule, 3)
    _alerts(many_rule, 12)
    DailySendCounter.objects.create(day=timezone.localdate())  # both runs find today's counter

    with django_capture_on_commit_callbacks(execute=False):
        few, _ = _run_action(admin_client, "send_coupon", rule__id__exact=str(few_rule.pk))
        many, messages = _run_action(admin_client, "send_coupon", rule__id__exact=str(many_rule.pk))

    assert many == few, f"{few} queries for 3 alerts, {many} for 12: the cost grows with the selection"
    coupons = Intervention.objects.filter(kind=ActionKind.COUPON_EMAIL)
    assert coupons.filter(status=InterventionStatus.PENDING).count() == 15
    assert coupons.filter(alert__rule=many_rule).values("alert").distinct().count() == 12
    assert any("Coupon emails: 12 pending" in m for m in messages), messages


def test_bulk_coupons_return_existing_coupons_refuse_closed_alerts_and_apply_the_gates(admin_client) -> None:  # noqa: ANN001
    rule = _rule()
    sent_before, dismissed, no_consent, fresh = (
        _alerts(rule, 1)[0],
        _alerts(rule, 1, status=AlertStatus.DISMISSED)[0],
        _alerts(rule, 1)[0],
        _alerts(rule, 1)[0],
    )
    Customer.objects.filter(pk=no_consent.customer_id).update(marketing_consent=False)
    _, _ = _run_action(admin_client, "send_coupon", id__in=str(sent_before.pk))
    first = Intervention.objects.get(alert=sent_before)

    _, messages = _run_action(admin_client, "send_coupon")

    assert Intervention.objects.get(alert=sent_before) == first, "one coupon per alert: the existing one"
    assert not Intervention.objects.filter(alert=dismissed).exists()
    assert Intervention.objects.get(alert=no_consent).status == InterventionStatus.SUPPRESSED
    assert Intervention.objects.get(alert=no_consent).reason == "no marketing consent"
    assert Intervention.objects.get(alert=fresh).coupon_code
    assert any(f"1 refused: alert {dismissed.pk} is dismissed" in m for m in messages), messages


def test_bulk_coupons_keep_a_customer_in_one_control_group_entry_per_rule(admin_client) -> None:  # noqa: ANN001
    """Two held-out alerts of one customer and rule (two periods) in one chunk: as one at a time, the second finds
    the first's control group window open and is suppressed, not a second control outcome of the rule."""
    rule = _rule()
    (first,) = _alerts(rule, 1, holdout=True)
    second = _alert(first.customer, rule, first.score, holdout=True, period_start=T0.date() - timedelta(days=40))

    _run_action(admin_client, "send_coupon")

    statuses = sorted(Intervention.objects.filter(alert__in=[first, second]).values_list("status", flat=True))
    assert statuses == [InterventionStatus.HOLDOUT, InterventionStatus.SUPPRESSED], statuses


def test_bulk_coupons_say_which_coupons_existed_before_instead_of_counting_them_as_sent_now(admin_client) -> None:  # noqa: ANN001
    # The message counted an alert's existing coupon with the new ones: "Coupon emails: 1 sent" for a selection
    # whose coupon had gone out the day before, while nothing was sent.
    rule = _rule()
    sent_before, fresh = _alerts(rule, 1)[0], _alerts(rule, 1)[0]
    _run_action(admin_client, "send_coupon", id__in=str(sent_before.pk))
    Intervention.objects.filter(alert=sent_before).update(status=InterventionStatus.SENT, sent_at=timezone.now())

    _, repeated = _run_action(admin_client, "send_coupon", id__in=str(sent_before.pk))
    _, both = _run_action(admin_client, "send_coupon", id__in=f"{sent_before.pk},{fresh.pk}")

    assert Intervention.objects.filter(alert=sent_before).count() == 1
    assert not any("1 sent" in m and "already" not in m for m in repeated), repeated
    assert any("no new coupon" in m.lower() for m in repeated), repeated
    assert any("1 alert(s) already had one (1 sent)" in m for m in repeated), repeated
    assert any("Coupon emails: 1 pending" in m for m in both), both
    assert any("1 alert(s) already had one (1 sent)" in m for m in both), both
