"""GET /api/v1/customers/: list with filters and pages, detail with the timeline, and the CSV export."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from customers.models import Customer, Event, Message, Order
from tests.staff import grant_app_permissions

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff() -> APIClient:
    user = grant_app_permissions(get_user_model().objects.create_user(username="ops", password="x", is_staff=True))
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def ada() -> Customer:
    ada = Customer.objects.create(external_id="c1", name="Ada", segment="vip", churned=True, attributes={"tier": 2})
    Order.objects.create(
        external_id="o1", customer=ada, placed_at=datetime(2024, 1, 1, tzinfo=UTC), amount=Decimal("20.00")
    )
    Event.objects.create(
        external_id="e1", customer=ada, kind="search", occurred_at=datetime(2024, 1, 2, tzinfo=UTC), properties={}
    )
    Message.objects.create(
        external_id="m1",
        customer=ada,
        conversation_id="t1",
        sent_at=datetime(2024, 1, 3, tzinfo=UTC),
        text="<script>alert(1)</script>",
    )
    return ada


def test_list_is_paginated_and_carries_order_stats(staff: APIClient, ada: Customer) -> None:
    Customer.objects.bulk_create([Customer(external_id=f"x{n}", is_minimal=True) for n in range(60)])
    first = staff.get("/api/v1/customers/").json()
    assert first["count"] == 61 and len(first["results"]) == 50 and first["next"]  # PAGE_SIZE = 50
    assert len(staff.get(first["next"]).json()["results"]) == 11
    row = first["results"][0]
    assert (row["external_id"], row["order_count"], row["completed_revenue"]) == ("c1", 1, "20.00")


@pytest.mark.parametrize(
    ("query", "expected"),
    [("segment=vip", ["c1"]), ("churned=true", ["c1"]), ("is_minimal=true", ["x0"]), ("q=Ad", ["c1"]), ("q=x", ["x0"])],
)
def test_list_filters(staff: APIClient, ada: Customer, query: str, expected: list[str]) -> None:
    Customer.objects.create(external_id="x0", is_minimal=True, churned=False)
    results = staff.get(f"/api/v1/customers/?{query}").json()["results"]
    assert [row["external_id"] for row in results] == expected


def test_churned_false_lists_every_customer_not_marked_churned(staff: APIClient, ada: Customer) -> None:
    # A customer imported without a label (an event log, the demo store) has no churn flag (null): scoring counts
    # them as active, and so must ?churned=false, which answered an empty list for a whole store without labels.
    Customer.objects.create(external_id="x0", churned=False)
    Customer.objects.create(external_id="x1")  # churned is None
    listed = staff.get("/api/v1/customers/?churned=false").json()["results"]
    assert [row["external_id"] for row in listed] == ["x0", "x1"]
    export = staff.get("/api/v1/customers/export.csv?churned=false")
    rows = list(csv.DictReader(io.StringIO(b"".join(export.streaming_content).decode())))
    assert [row["external_id"] for row in rows] == ["x0", "x1"]
    assert [row["external_id"] for row in staff.get("/api/v1/customers/?churned=true").json()["results"]] == ["c1"]


def test_bad_filter_value_is_a_400(staff: APIClient) -> None:
    assert staff.get("/api/v1/customers/?churned=maybe").status_code == 400


def test_detail_has_attributes_and_the_timeline_newest_first(staff: APIClient, ada: Customer) -> None:
    body = staff.get(f"/api/v1/customers/{ada.pk}/").json()
    assert body["attributes"] == {"tier": 2}
    assert [entry["kind"] for entry in body["timeline"]] == ["message", "event", "order"]
    assert body["timeline"][0]["text"] == "<script>alert(1)</script>"
    limited = staff.get(f"/api/v1/customers/{ada.pk}/?timeline_limit=1").json()
    assert len(limited["timeline"]) == 1
    assert staff.get("/api/v1/customers/999999/").status_code == 404


def test_export_csv_neutralises_formulas(staff: APIClient) -> None:
    Customer.objects.create(external_id="c1", name='=HYPERLINK("http://evil.example","x")')
    Customer.objects.create(external_id="@c2", name="+1 555", segment="-vip")
    response = staff.get("/api/v1/customers/export.csv")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [(row["external_id"], row["name"], row["segment"]) for row in rows] == [
        ("c1", '\'=HYPERLINK("http://evil.example","x")', ""),
        ("'@c2", "'+1 555", "'-vip"),
    ]


def test_customers_api_needs_staff() -> None:
    assert APIClient().get("/api/v1/customers/").status_code in (401, 403)
