"""Findings of a crawl of the admin as staff with partial permissions: no page shows a button whose POST answers 403,
nor links to a page that answers 403 for the staff reading it."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from customers.models import Customer, Order
from tests.customers.test_admin import T0, _alert, _model_version, _rule, _score

pytestmark = pytest.mark.django_db

BUTTONS = ("action-rescore", "action-send-coupon", "action-opt-out")


def _staff(django_user_model, name: str, *codenames: str):  # noqa: ANN001, ANN202
    user = django_user_model.objects.create_user(name, password="pw-for-tests-123", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return user


@pytest.fixture
def customer() -> Customer:
    customer = Customer.objects.create(external_id="c-1", name="Eve", email="eve@example.com", marketing_consent=True)
    Order.objects.create(external_id="o-1", customer=customer, placed_at=T0, amount=Decimal("30.00"))
    _alert(customer, _rule(), _score(customer, _model_version(), 0.8, T0))
    return customer


@pytest.mark.parametrize(
    ("codenames", "shown"),
    [
        (("view_customer",), ()),
        (("view_customer", "change_alert"), ()),  # a coupon also needs to change the customer: it would be a 403
        (("view_customer", "change_customer"), ("action-rescore", "action-opt-out")),
        (("view_customer", "change_customer", "change_alert"), BUTTONS),
    ],
)
def test_the_customer_page_shows_only_the_buttons_its_staff_may_use(
    client, django_user_model, customer: Customer, codenames: tuple[str, ...], shown: tuple[str, ...]
) -> None:  # noqa: ANN001
    client.force_login(_staff(django_user_model, "staff", *codenames))

    html = client.get(reverse("admin:customers_customer_change", args=[customer.pk])).content.decode()

    assert [button for button in BUTTONS if f'id="{button}"' in html] == list(shown)
    for name in ("rescore", "send-coupon", "opt-out"):  # what a button shown would send
        allowed = f"action-{name}" in shown
        response = client.post(reverse(f"admin:customers_customer_{name.replace('-', '_')}", args=[customer.pk]))
        assert (response.status_code != 403) == allowed, (name, response.status_code)
