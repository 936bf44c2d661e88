from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.admin.sites import site
from django.db import connection
from django.test import RequestFactory
from django.urls import reverse

from customers.admin import EstimatedCountPaginator
from customers.models import Customer, Event, ImportRun, Message, Order
from customers.selectors import customer_timeline, customers_with_order_stats

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SCRIPT = "<script>alert('x')</script>"


@pytest.fixture
def customer() -> Customer:
    customer = Customer.objects.create(
        external_id="c-1", name=f"Eve {SCRIPT}", email="eve@example.com", segment="premium", country="US"
    )
    Order.objects.create(external_id="o-1", customer=customer, placed_at=T0, amount=Decimal("30.00"))
    Order.objects.create(
        external_id="o-2",
        customer=customer,
        placed_at=T0 + timedelta(days=2),
        amount=Decimal("12.00"),
        status="returned",
    )
    Event.objects.create(
        external_id="e-1",
        customer=customer,
        kind="search",
        occurred_at=T0 + timedelta(days=1),
        properties={"query": SCRIPT},
    )
    Message.objects.create(
        external_id="m-1",
        customer=customer,
        conversation_id="v-1",
        sent_at=T0 + timedelta(days=3),
        text=f"my parcel is late {SCRIPT}",
    )
    return customer


def test_every_customers_admin_page_renders(admin_client, customer: Customer) -> None:
    ImportRun.objects.create(
        kind="orders", source="orders.csv", errors=[{"row": 2, "field": "amount", "reason": SCRIPT}]
    )
    for model in (Customer, Order, Event, Message, ImportRun):
        name = model._meta.model_name
        changelist = admin_client.get(reverse(f"admin:customers_{name}_changelist"))
        first = model.objects.first()
        detail = admin_client.get(reverse(f"admin:customers_{name}_change", args=[first.pk]))
        assert (changelist.status_code, detail.status_code) == (200, 200), name
        assert SCRIPT.encode() not in changelist.content + detail.content, name


def test_customer_page_shows_the_timeline_newest_first_with_customer_text_escaped(
    admin_client, customer: Customer
) -> None:
    response = admin_client.get(reverse("admin:customers_customer_change", args=[customer.pk]))

    html = response.content.decode()
    message = Message.objects.get(external_id="m-1")
    assert SCRIPT not in html
    assert f'href="{reverse("admin:customers_message_change", args=[message.pk])}"' in html
    assert "my parcel is late &lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    positions = [html.index(marker) for marker in ("conversation v-1", "order o-2", "query=&lt;script", "order o-1")]
    assert positions == sorted(positions), "timeline is not newest first"


def test_timeline_merges_orders_events_and_messages_and_stops_at_the_limit(customer: Customer) -> None:
    everything = customer_timeline(customer=customer)
    newest_two = customer_timeline(customer=customer, limit=2)

    assert [(entry.kind, entry.at) for entry in everything] == [
        ("message", T0 + timedelta(days=3)),
        ("order", T0 + timedelta(days=2)),
        ("event", T0 + timedelta(days=1)),
        ("order", T0),
    ]
    assert newest_two == everything[:2]


def test_order_stats_count_orders_and_completed_revenue_per_customer(customer: Customer) -> None:
    Customer.objects.create(external_id="c-2")

    stats = {row.external_id: row for row in customers_with_order_stats()}

    assert (stats["c-1"].order_count, stats["c-1"].completed_revenue) == (2, Decimal("30.00"))
    assert stats["c-1"].last_order_at == T0 + timedelta(days=2)
    assert (stats["c-2"].order_count, stats["c-2"].completed_revenue, stats["c-2"].last_order_at) == (0, 0, None)


@pytest.mark.parametrize("model", [Event, ImportRun])
def test_event_and_import_run_admin_are_read_only(admin_client, admin_user, customer: Customer, model) -> None:
    ImportRun.objects.create(kind="events", source="api")
    obj = model.objects.first()
    name = model._meta.model_name
    request = RequestFactory().get("/")
    request.user = admin_user
    model_admin = site._registry[model]

    add = admin_client.get(reverse(f"admin:customers_{name}_add"))
    delete = admin_client.post(reverse(f"admin:customers_{name}_delete", args=[obj.pk]), {"post": "yes"})
    change = admin_client.post(reverse(f"admin:customers_{name}_change", args=[obj.pk]), {"kind": "tampered"})

    assert (add.status_code, delete.status_code, change.status_code) == (403, 403, 403)
    permissions = (
        model_admin.has_add_permission(request),
        model_admin.has_change_permission(request, obj),
        model_admin.has_delete_permission(request, obj),
    )
    assert permissions == (False, False, False)
    assert model.objects.filter(pk=obj.pk).exists()


def test_export_action_downloads_a_formula_neutralised_csv(admin_client, customer: Customer) -> None:
    other = Customer.objects.create(
        external_id='=HYPERLINK("http://evil.example")', name="@bob", email="+1@example.com"
    )

    response = admin_client.post(
        reverse("admin:customers_customer_changelist"),
        {"action": "export_customers_csv", "_selected_action": [customer.pk, other.pk]},
    )

    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert [row["external_id"] for row in rows] == ["c-1", '\'=HYPERLINK("http://evil.example")']
    assert (rows[1]["name"], rows[1]["email"]) == ("'@bob", "'+1@example.com")


def test_message_export_action_neutralises_customer_text(admin_client, customer: Customer) -> None:
    message = Message.objects.create(
        external_id="m-2", customer=customer, conversation_id="v-2", sent_at=T0, text='=IMPORTXML("http://x")'
    )

    response = admin_client.post(
        reverse("admin:customers_message_changelist"),
        {"action": "export_rows_csv", "_selected_action": [message.pk]},
    )

    rows = list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert [(row["external_id"], row["customer__external_id"], row["text"]) for row in rows] == [
        ("m-2", "c-1", '\'=IMPORTXML("http://x")')
    ]


def test_opt_out_action_opts_out_and_keeps_an_earlier_opt_out_time(admin_client, customer: Customer) -> None:
    earlier = datetime(2025, 1, 1, tzinfo=UTC)
    already = Customer.objects.create(external_id="c-2", marketing_consent=True, opted_out_at=earlier)

    admin_client.post(
        reverse("admin:customers_customer_changelist"),
        {"action": "opt_out_customers", "_selected_action": [customer.pk, already.pk]},
    )

    customer.refresh_from_db()
    already.refresh_from_db()
    assert customer.opted_out_at is not None and not customer.can_be_contacted
    assert already.opted_out_at == earlier


def test_customer_list_searches_by_email_and_filters_by_opt_out(admin_client, customer: Customer) -> None:
    Customer.objects.create(external_id="c-2", name="Opted Olga", email="olga@example.com", opted_out_at=T0)
    url = reverse("admin:customers_customer_changelist")

    by_email = admin_client.get(url, {"q": "olga@example"}).context["cl"].result_list
    opted_out = admin_client.get(url, {"opted_out": "yes"}).context["cl"].result_list
    premium = admin_client.get(url, {"segment": "premium"}).context["cl"].result_list

    assert [c.external_id for c in by_email] == ["c-2"]
    assert [c.external_id for c in opted_out] == ["c-2"]
    assert [c.external_id for c in premium] == ["c-1"]


def test_event_list_filters_by_kind(admin_client, customer: Customer) -> None:
    Event.objects.create(external_id="e-2", customer=customer, kind="login", occurred_at=T0)

    result = admin_client.get(reverse("admin:customers_event_changelist"), {"kind": "login"}).context["cl"].result_list

    assert [event.external_id for event in result] == ["e-2"]


def test_event_paginator_counts_small_or_filtered_tables_exactly(customer: Customer) -> None:
    Event.objects.create(external_id="e-2", customer=customer, kind="login", occurred_at=T0)

    assert EstimatedCountPaginator(Event.objects.order_by("-pk"), 100).count == 2
    assert EstimatedCountPaginator(Event.objects.filter(kind="login").order_by("-pk"), 100).count == 1


@pytest.mark.services
def test_event_paginator_uses_the_planner_estimate_for_a_large_unfiltered_postgresql_table(customer: Customer) -> None:
    Event.objects.bulk_create(
        Event(external_id=f"bulk-{n}", customer=customer, kind="page_view", occurred_at=T0) for n in range(300)
    )
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {Event._meta.db_table}")
        cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)", [Event._meta.db_table])
        estimate = cursor.fetchone()[0]

    class SmallThreshold(EstimatedCountPaginator):
        exact_below = 10

    assert connection.vendor == "postgresql"
    assert SmallThreshold(Event.objects.order_by("-pk"), 100).count == estimate
    assert SmallThreshold(Event.objects.filter(kind="search").order_by("-pk"), 100).count == 1
