"""Staff see stored times in the site's time zone (as customers/admin.py does with
timezone.localtime and as the dashboard does); some texts format the stored UTC value directly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib import admin
from django.urls import reverse
from django.utils import timezone

from alerts.admin import AlertAdmin
from alerts.models import ActionKind, Alert, Intervention, InterventionStatus
from alerts.services import CouponNotAllowed, customer_send_coupon
from customers.models import Customer, Message
from tests.customers.test_admin import T0, _alert, _model_version, _rule, _score

pytestmark = pytest.mark.django_db

# 17:30 UTC on 9 March is 01:30 on 10 March in Shanghai.
LATE_UTC = datetime(2026, 3, 9, 17, 30, tzinfo=UTC)


def test_alert_queue_latest_messages_are_dated_in_the_site_time_zone(settings) -> None:  # noqa: ANN001
    settings.TIME_ZONE = "Asia/Shanghai"
    customer = Customer.objects.create(external_id="c1", name="n", email="e@e.com")
    Message.objects.create(external_id="m1", customer=customer, conversation_id="c1", sent_at=LATE_UTC, text="hi")
    alert = _alert(customer, _rule(), _score(customer, _model_version(), 0.7, T0))

    with timezone.override("Asia/Shanghai"):
        html = str(AlertAdmin(Alert, admin.site).message_snippets(alert))

    assert "2026-03-10" in html, f"message of 01:30 on 10 March (local) shown as: {html}"


def test_already_opted_out_message_gives_the_local_time(admin_client, settings) -> None:  # noqa: ANN001
    settings.TIME_ZONE = "Asia/Shanghai"
    customer = Customer.objects.create(external_id="c1", name="n", email="e@e.com", opted_out_at=LATE_UTC)

    response = admin_client.post(reverse("admin:customers_customer_opt_out", args=[customer.pk]), follow=True)

    messages = [str(m) for m in response.context["messages"]]
    page = response.content.decode()
    assert "Opted out since 2026-03-10 01:30" in page  # the same page's button title is local
    assert any("since 2026-03-10 01:30" in m for m in messages), messages


def test_control_group_refusal_names_the_local_end_date(settings) -> None:  # noqa: ANN001
    settings.TIME_ZONE = "Asia/Shanghai"
    customer = Customer.objects.create(external_id="c1", name="n", email="e@e.com", marketing_consent=True)
    rule = _rule(horizon_days=60)
    alert = _alert(customer, rule, _score(customer, _model_version(), 0.7, T0), status="dismissed")
    held = Intervention.objects.create(
        alert=alert, customer=customer, kind=ActionKind.COUPON_EMAIL, status=InterventionStatus.HOLDOUT,
        reason="control group", idempotency_key="held-1",
    )  # fmt: skip
    dispatched = timezone.now() - timedelta(days=1)
    dispatched = dispatched.replace(hour=17, minute=30, second=0, microsecond=0)  # 01:30 the next day locally
    Intervention.objects.filter(pk=held.pk).update(created_at=dispatched)
    until_local = timezone.localtime(dispatched + timedelta(days=60), timezone=timezone.get_current_timezone())

    with timezone.override("Asia/Shanghai"), pytest.raises(CouponNotAllowed) as refused:
        customer_send_coupon(customer=customer, actor="staff")

    assert f"until {until_local:%Y-%m-%d}" in str(refused.value), str(refused.value)


def test_object_names_in_the_admin_give_local_times(settings) -> None:  # noqa: ANN001
    from alerts.models import AuditEntry
    from customers.models import CustomerProfileChange, Event
    from predictions.models import ScoringRun, WorkerHeartbeat

    settings.TIME_ZONE = "Asia/Shanghai"
    customer = Customer.objects.create(external_id="c1", name="n", email="e@e.com")
    message = Message(customer=customer, author_role="customer", channel="email", sent_at=LATE_UTC)
    event = Event(customer=customer, kind="login", occurred_at=LATE_UTC)
    change = CustomerProfileChange(customer=customer, previous={"segment": "a"}, changed_at=LATE_UTC)
    run = ScoringRun(pk=7, model_version=_model_version(), as_of=LATE_UTC, status="succeeded")
    beat = WorkerHeartbeat(hostname="w1", queue="gpu", seen_at=LATE_UTC)
    entry = AuditEntry(actor="staff", action="x", at=LATE_UTC)

    with timezone.override("Asia/Shanghai"):
        names = [str(message), str(event), str(change), str(run), str(beat), str(entry)]

    assert all("2026-03-10" in name for name in names), names


def test_customer_page_gives_the_last_order_in_the_site_time_zone(admin_client, settings) -> None:  # noqa: ANN001
    # A readonly field computed by an admin method is shown with str(): a datetime came out as the stored UTC value
    # in ISO form ("2026-03-09 17:30:00+00:00") beside a timeline in local time.
    from customers.models import Order

    settings.TIME_ZONE = "Asia/Shanghai"
    customer = Customer.objects.create(external_id="c1", name="n", email="e@e.com")
    Order.objects.create(external_id="o1", customer=customer, placed_at=LATE_UTC, amount=10, currency="USD")

    page = admin_client.get(reverse("admin:customers_customer_change", args=[customer.pk])).content.decode()

    last_order = page[page.index("Last order") :][:400]
    assert "+00:00" not in last_order and "17:30" not in last_order, last_order
    assert "March 10, 2026, 1:30 a.m." in last_order, last_order
