"""Profile changes are recorded by imports and edits, and point-in-time reads undo the later ones."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone

from customers.admin import CustomerAdmin
from customers.ingest import import_file, import_options_from_settings
from customers.models import Customer, CustomerProfileChange
from customers.services import customer_save
from predictions.selectors import customer_histories

pytestmark = pytest.mark.django_db

HEADER = "customer_id,segment,country,plan,seats\n"


def import_customers(content: str, *, dry_run: bool = False) -> None:
    import_file(
        stream=io.BytesIO(content.encode()),
        source="customers.csv",
        options=import_options_from_settings(kind="customers"),
        dry_run=dry_run,
    )


def test_a_reimport_that_changes_the_profile_records_the_values_before_it() -> None:
    import_customers(HEADER + "c1,regular,FR,basic,1\nc2,regular,FR,basic,1\n")
    assert not CustomerProfileChange.objects.exists()  # a first import is not a change
    import_customers(HEADER + "c1,vip,FR,premium,1\nc2,regular,FR,basic,1\n")
    import_customers(HEADER + "c1,vip,FR,premium,1\nc2,regular,FR,basic,1\n")  # the same again: nothing new
    change = CustomerProfileChange.objects.get()
    assert change.customer.external_id == "c1"
    assert change.previous == {"segment": "regular", "attributes": {"plan": "basic", "seats": 1}}
    assert change.source.startswith("import run ")
    assert Customer.objects.get(external_id="c1").segment == "vip"


def test_a_dry_run_and_a_placeholder_customer_record_no_change() -> None:
    import_customers(HEADER + "c1,regular,FR,basic,1\n")
    import_customers(HEADER + "c1,vip,FR,basic,1\n", dry_run=True)
    Customer.objects.create(external_id="c9", is_minimal=True)  # made for an order that came first
    import_customers(HEADER + "c9,vip,DE,premium,3\n")
    assert not CustomerProfileChange.objects.exists()
    assert Customer.objects.get(external_id="c1").segment == "regular"


def test_a_point_in_time_read_gives_the_profile_of_then() -> None:
    customer = Customer.objects.create(external_id="c1", segment="vip", attributes={"plan": "premium"})
    changed = timezone.now() - timedelta(days=30)
    CustomerProfileChange.objects.create(
        customer=customer, changed_at=changed, previous={"segment": "regular", "attributes": {"plan": "basic"}}
    )
    (before,) = customer_histories(until=changed - timedelta(seconds=1))
    (after,) = customer_histories(until=changed)
    (now,) = customer_histories()
    assert (before.customer.segment, dict(before.customer.attributes), before.profile_changes) == (
        "regular",
        {"plan": "basic"},
        (),
    )
    assert (after.customer.segment, dict(after.customer.attributes)) == ("vip", {"plan": "premium"})
    assert len(after.profile_changes) == 1 and len(now.profile_changes) == 1
    assert now.customer.segment == "vip"


def test_an_edit_by_hand_records_what_it_changed_and_an_unchanged_save_records_nothing() -> None:
    customer = Customer.objects.create(external_id="c1", segment="regular", country="FR", attributes={"plan": "a"})
    at = datetime(2026, 5, 1, tzinfo=UTC)
    customer.segment, customer.name = "vip", "Eve"
    customer_save(customer=customer, source="user:ann", at=at)
    customer_save(customer=customer, source="user:ann")
    change = CustomerProfileChange.objects.get()
    assert (change.previous, change.changed_at, change.source) == ({"segment": "regular"}, at, "user:ann")


def test_the_admin_edit_form_records_the_change_and_shows_the_history(admin_client) -> None:
    customer = Customer.objects.create(external_id="c1", segment="regular", country="FR", attributes={"plan": "a"})
    url = reverse("admin:customers_customer_change", args=[customer.pk])
    form = {
        "external_id": "c1",
        "name": "",
        "email": "",
        "segment": "vip",
        "country": "FR",
        "language": "",
        "attributes": '{"plan": "b"}',
    }
    response = admin_client.post(url, form)
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else response
    change = CustomerProfileChange.objects.get()
    assert change.previous == {"segment": "regular", "attributes": {"plan": "a"}}
    assert change.source.startswith("user:")
    page = admin_client.get(url).content.decode()
    assert "Profile history" in page and "&quot;regular&quot;" in page


def test_the_customer_api_gives_the_profile_history_newest_first() -> None:
    from rest_framework.test import APIClient

    from tests.staff import grant_app_permissions

    import_customers(HEADER + "c1,regular,FR,basic,1\n")
    import_customers(HEADER + "c1,vip,FR,basic,1\n")
    import_customers(HEADER + "c1,vip,DE,basic,1\n")
    client = APIClient()
    user = get_user_model().objects.create_user("ops", password="pw-ops-x", is_staff=True)
    client.force_login(grant_app_permissions(user))
    customer = Customer.objects.get(external_id="c1")
    body = client.get(f"/api/v1/customers/{customer.pk}/").json()
    assert [change["previous"] for change in body["profile_history"]] == [{"country": "FR"}, {"segment": "regular"}]
    assert body["segment"] == "vip"


def test_profile_history_and_timeline_keep_their_own_labels() -> None:
    assert CustomerAdmin.profile_history.short_description == "changes, newest first"
    assert getattr(CustomerAdmin.timeline, "short_description", None) == "timeline"


def test_an_import_never_moves_an_opt_out_later_nor_clears_it() -> None:
    from customers.services import customer_opt_out

    customer = Customer.objects.create(external_id="o1", email="o1@example.com", marketing_consent=True)
    first = customer_opt_out(customer=customer, at=datetime(2026, 1, 5, tzinfo=UTC)).opted_out_at
    header = "customer_id,marketing_consent,opted_out_at\n"
    import_customers(header + "o1,true,2026-02-01T00:00:00Z\n")  # it moved the opt-out to February
    customer.refresh_from_db()
    assert customer.opted_out_at == first and not customer.can_be_contacted
    import_customers(header + "o1,true,\n")
    customer.refresh_from_db()
    assert customer.opted_out_at == first
    import_customers(header + "o1,true,2025-12-24T00:00:00Z\n")  # an earlier opt-out known to the CRM
    customer.refresh_from_db()
    assert customer.opted_out_at == datetime(2025, 12, 24, tzinfo=UTC)
