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


def test_the_alert_queue_links_the_customer_only_for_staff_who_may_open_the_customer(
    client, django_user_model, customer: Customer
) -> None:  # noqa: ANN001
    alert = customer.alerts.get()
    customer_page = reverse("admin:customers_customer_change", args=[customer.pk])
    pages = [reverse("admin:alerts_alert_changelist"), reverse("admin:alerts_alert_change", args=[alert.pk])]

    client.force_login(_staff(django_user_model, "queue", "view_alert", "change_alert"))
    assert client.get(customer_page).status_code == 403
    for page in pages:
        html = client.get(page).content.decode()
        assert "Eve" in html and f'href="{customer_page}"' not in html, page

    client.force_login(_staff(django_user_model, "crm", "view_alert", "view_customer"))
    for page in pages:
        assert f'href="{customer_page}"' in client.get(page).content.decode(), page


def test_the_customer_list_links_the_open_alert_only_for_staff_who_may_open_alerts(
    client, django_user_model, customer: Customer
) -> None:  # noqa: ANN001
    alert_page = reverse("admin:alerts_alert_change", args=[customer.alerts.get().pk])
    changelist = reverse("admin:customers_customer_changelist")

    client.force_login(_staff(django_user_model, "clerk", "view_customer"))
    assert client.get(alert_page).status_code == 403
    html = client.get(changelist).content.decode()
    assert f"yes (#{customer.alerts.get().pk})" in html and alert_page not in html

    client.force_login(_staff(django_user_model, "crm", "view_customer", "view_alert"))
    assert alert_page in client.get(changelist).content.decode()


def test_the_customer_timeline_links_rows_only_for_staff_who_may_open_them(
    client, django_user_model, customer: Customer
) -> None:  # noqa: ANN001
    order_page = reverse("admin:customers_order_change", args=[customer.orders.get().pk])
    page = reverse("admin:customers_customer_change", args=[customer.pk])

    client.force_login(_staff(django_user_model, "clerk", "view_customer"))
    assert client.get(order_page).status_code == 403
    html = client.get(page).content.decode()
    assert 'class="timeline-order"' in html and order_page not in html

    client.force_login(_staff(django_user_model, "crm", "view_customer", "view_order"))
    assert order_page in client.get(page).content.decode()


def test_no_admin_page_links_to_a_site_root_that_answers_404(admin_client) -> None:  # noqa: ANN001
    assert admin_client.get("/").status_code == 404

    html = admin_client.get(reverse("admin:index")).content.decode()

    assert 'href="/"' not in html and "View site" not in html
