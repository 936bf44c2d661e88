"""One currency per store: orders in another are converted at import with the configured rates, or refused with
their row named. Spend features, customer value and expected loss add amounts up, and 20,000 JPY added to
1,000 USD as if both were the same money ranked a customer worth about 130 USD twenty times above one worth 1,000."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from customers.models import Order
from tests.customers.test_import_command import run_import

pytestmark = pytest.mark.django_db


def _orders(*rows: str, ids: bool = True) -> str:
    placed = (timezone.now() - timedelta(days=10)).strftime("%Y-%m-%dT%H:%M:%S+00:00")
    header = (
        "order_id,customer_id,date,amount,discount,currency" if ids else "customer_id,date,amount,discount,currency"
    )
    return header + "\n" + "".join(row.format(placed=placed) + "\n" for row in rows)


def test_an_order_in_another_currency_without_a_rate_is_refused_with_its_row_and_field(settings) -> None:  # noqa: ANN001
    settings.CHURN_EXCHANGE_RATES = {}
    result = run_import(
        "orders",
        _orders("o-usd,usd,{placed},1000.00,0,USD", "o-jpy,jpy,{placed},20000,0,JPY", "o-none,none,{placed},50,0,"),
    )

    assert result.rows_imported == 2 and result.rows_rejected == 1
    (error,) = result.errors
    assert (error.row, error.field) == (3, "currency")
    assert "JPY is not the store's currency USD" in error.reason and "CHURN_EXCHANGE_RATES=JPY=" in error.reason
    assert dict(Order.objects.values_list("external_id", "currency")) == {"o-usd": "USD", "o-none": "USD"}


def test_an_order_in_another_currency_is_converted_with_the_configured_rate_and_reimports_unchanged(settings) -> None:  # noqa: ANN001
    settings.CHURN_EXCHANGE_RATES = {"JPY": Decimal("0.0065"), "EUR": Decimal("1.08")}
    content = _orders(
        "o-usd,usd,{placed},1000.00,0,USD", "o-jpy,jpy,{placed},20000,1000,jpy", "o-eur,eur,{placed},10.00,0,EUR"
    )

    first = run_import("orders", content)
    again = run_import("orders", content)

    orders = {o.external_id: (o.amount, o.discount_amount, o.currency) for o in Order.objects.all()}
    assert orders == {
        "o-usd": (Decimal("1000.00"), Decimal("0.00"), "USD"),
        "o-jpy": (Decimal("130.00"), Decimal("6.50"), "USD"),
        "o-eur": (Decimal("10.80"), Decimal("0.00"), "USD"),
    }
    assert "orders converted to USD (CHURN_EXCHANGE_RATES): 1 from EUR at 1.08, 1 from JPY at 0.0065" in first.notes
    assert (again.rows_imported, again.rows_unchanged) == (0, 3)


def test_an_order_without_an_id_is_not_imported_twice_when_the_rate_changes(settings) -> None:  # noqa: ANN001
    content = _orders("jpy,{placed},20000,0,JPY", ids=False)
    settings.CHURN_EXCHANGE_RATES = {"JPY": Decimal("0.0065")}
    run_import("orders", content)
    settings.CHURN_EXCHANGE_RATES = {"JPY": Decimal("0.0070")}
    run_import("orders", content)

    # The id comes from the row as written (20000 JPY): the same order, not a second one. A row without an id is
    # known by its content, which has not changed, so it keeps the amount of its first import.
    assert list(Order.objects.values_list("amount", "currency")) == [(Decimal("130.00"), "USD")]


def test_the_store_currency_is_the_default_of_an_order_without_one(settings) -> None:  # noqa: ANN001
    settings.CHURN_CURRENCY = "EUR"
    settings.CHURN_EXCHANGE_RATES = {"USD": Decimal("0.92")}
    run_import("orders", _orders("o-1,c1,{placed},10.00,0,", "o-2,c2,{placed},100.00,0,USD"))

    assert dict(Order.objects.values_list("external_id", "amount")) == {
        "o-1": Decimal("10.00"),
        "o-2": Decimal("92.00"),
    }
    assert set(Order.objects.values_list("currency", flat=True)) == {"EUR"}


def test_a_converted_amount_too_large_for_the_store_is_refused_with_its_row(settings) -> None:  # noqa: ANN001
    # Converted after the range check, 9,000,000,000 USD became 1.35e12 JPY: on PostgreSQL the whole import died of
    # a numeric overflow, on SQLite the amount was stored.
    settings.CHURN_CURRENCY = "JPY"
    settings.CHURN_EXCHANGE_RATES = {"USD": Decimal("150")}
    result = run_import("orders", _orders("o-1,c1,{placed},100.00,0,USD", "o-2,c2,{placed},9000000000.00,0,USD"))

    assert (result.rows_imported, result.rows_rejected) == (1, 1)
    (error,) = result.errors
    assert (error.row, error.field) == (3, "amount") and "9000000000.00 USD is 1350000000000.00 JPY" in error.reason
    assert list(Order.objects.values_list("amount", flat=True)) == [Decimal("15000.00")]
