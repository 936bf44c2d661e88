"""Readers and row parsing of customers.importers: no database needed."""

from __future__ import annotations

import codecs
import io
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from customers import importers
from customers.importers import (
    FileKeys,
    ImportFileError,
    ImportOptions,
    ParsedRow,
    PreparedRows,
    RowError,
    RowParser,
    assign_external_ids,
    open_records,
)

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def read(data: bytes, name: str = "file.csv", **options: object) -> tuple[list[object], list[str], list[str] | None]:
    stream = open_records(io.BytesIO(data), options=ImportOptions(kind="orders", **options), name=name)
    records = list(stream.records)
    return records, stream.notes, stream.columns


def parse_rows(kind: str, records: list[dict[str, object]], **options: object) -> list[ParsedRow | list[RowError]]:
    parser = RowParser(ImportOptions(kind=kind, now=NOW, **options))
    return [parser.parse(number, record) for number, record in enumerate(records, start=2)]


def errors_of(result: ParsedRow | list[RowError]) -> list[tuple[str, str]]:
    assert isinstance(result, list), f"expected row errors, got {result}"
    return [(error.field, error.reason) for error in result]


# --- reading --------------------------------------------------------------------------------------------------------


def test_csv_rows_are_numbered_like_file_lines() -> None:
    records, _, columns = read(b"customer_id,date,amount\nc1,2024-01-01,1\nc2,2024-01-02,2\n")
    assert columns == ["customer_id", "date", "amount"]
    assert records == [
        (2, {"customer_id": "c1", "date": "2024-01-01", "amount": "1"}),
        (3, {"customer_id": "c2", "date": "2024-01-02", "amount": "2"}),
    ]


def test_unbalanced_quote_rejects_its_row_and_the_rows_after_it_are_still_read() -> None:
    data = b'customer_id,date,amount\nc1,2024-01-01,1\nc2,"2024-01-02,2\nc3,2024-01-03,3\nc4,2024-01-04,4\n'
    records, _, _ = read(data)
    errors = [record for record in records if isinstance(record, RowError)]
    good = [record[1]["customer_id"] for record in records if isinstance(record, tuple)]
    assert good == ["c1", "c3", "c4"]
    assert len(errors) == 1 and errors[0].row == 3 and "unbalanced quote" in errors[0].reason, errors


def test_quote_in_the_middle_of_a_field_is_a_row_error() -> None:
    records, _, _ = read(b'customer_id,date,amount\nc1,2024-01-01,"1"0\nc2,2024-01-02,2\n')
    assert isinstance(records[0], RowError) and records[0].row == 2 and "malformed CSV" in records[0].reason
    assert records[1] == (3, {"customer_id": "c2", "date": "2024-01-02", "amount": "2"})


def test_row_with_too_many_fields_names_its_line() -> None:
    records, _, _ = read(b"customer_id,date,amount\nc1,2024-01-01,1,extra\n")
    assert records == [
        RowError(2, "*", "has 4 fields but the header has 3 (an unbalanced quote or a stray delimiter?)")
    ]


def test_semicolon_delimiter_is_detected_with_a_note() -> None:
    records, notes, columns = read(b"customer_id;date;amount\nc1;2024-01-01;1.50\n")
    assert columns == ["customer_id", "date", "amount"] and records[0][1]["amount"] == "1.50"
    assert any("delimiter" in note for note in notes), notes


def test_wrong_explicit_delimiter_gives_a_clear_file_error() -> None:
    stream = open_records(
        io.BytesIO(b"customer_id;date;amount\nc1;2024-01-01;1\n"),
        options=ImportOptions(kind="orders", delimiter=","),
        name="x.csv",
    )
    with pytest.raises(ImportFileError, match="wrong delimiter"):
        RowParser(ImportOptions(kind="orders")).check_columns(stream.columns or [])


@pytest.mark.parametrize("data", [b"", b"\n\n  \n", codecs.BOM_UTF8])
def test_empty_file_is_a_file_error(data: bytes) -> None:
    with pytest.raises(ImportFileError, match="empty"):
        read(data)


def test_utf8_byte_order_mark_is_not_part_of_the_first_column() -> None:
    records, notes, columns = read(codecs.BOM_UTF8 + "customer_id,date,amount\nçé,2024-01-01,1\n".encode())
    assert columns == ["customer_id", "date", "amount"] and records[0][1]["customer_id"] == "çé"
    assert any("byte-order mark" in note for note in notes)


def test_cp1252_lines_are_decoded_with_a_note() -> None:
    records, notes, _ = read("customer_id,date,amount\nCafé “Noël”,2024-01-01,1\n".encode("cp1252"))
    assert records[0][1]["customer_id"] == "Café “Noël”"
    assert any("cp1252" in note for note in notes), notes


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_with_or_without_bom_is_read(encoding: str) -> None:
    text = "customer_id,date,amount\r\nZoë 王,2024-01-01,1\r\nc2,2024-01-02,2\r\n"
    records, _, columns = read(text.encode(encoding))
    assert columns == ["customer_id", "date", "amount"]
    assert [record[1]["customer_id"] for record in records] == ["Zoë 王", "c2"]


def test_utf16_unbalanced_quote_recovers_too() -> None:
    text = 'customer_id,date,amount\nc1,"2024-01-01,1\nc2,2024-01-02,2\n'
    records, _, _ = read(text.encode("utf-16"))
    assert isinstance(records[0], RowError) and records[1] == (
        3,
        {"customer_id": "c2", "date": "2024-01-02", "amount": "2"},
    )


TRICKY_CSV = (
    "customer_id,date,amount\r\n"
    "c1,2024-01-01,1\r\n"
    '"c2 ""quoted""\nover two lines",2024-01-02,2\n'
    "\n"
    + "".join(f"c{n},2024-01-03,{n}\n" for n in range(3, 40))
    + 'c40,"2024-01-04,4\n'  # an unbalanced quote: swallows the lines after it
    + "".join(f"c{n},2024-01-05,{n}\n" for n in range(41, 80))
    + "c80,2024-01-06,80"  # no newline at the end
)


@pytest.mark.parametrize("encoding", ["utf-8", "cp1252", "utf-16"])
def test_rows_are_the_same_whatever_the_read_size(monkeypatch: pytest.MonkeyPatch, encoding: str) -> None:
    """Lines are read in chunks; rows spanning chunks and rereading after a broken row must not depend on them."""
    data = TRICKY_CSV.replace("c1,", "Café “Noël”,").encode(encoding)
    expected = read(data)
    assert len([record for record in expected[0] if isinstance(record, RowError)]) == 1
    assert expected[0][-1] == (83, {"customer_id": "c80", "date": "2024-01-06", "amount": "80"})
    assert expected[0][1] == (3, {"customer_id": 'c2 "quoted"\nover two lines', "date": "2024-01-02", "amount": "2"})
    for size in (1, 7, 64, 300):
        monkeypatch.setattr(importers, "_CHUNK_BYTES", size)
        monkeypatch.setattr(importers, "_TEXT_CHUNK_LINES", max(1, size // 32))
        assert read(data) == expected, size


def test_duplicate_header_is_a_file_error() -> None:
    with pytest.raises(ImportFileError, match="appears twice"):
        read(b"customer_id,amount,amount\n")


def test_jsonl_reads_objects_and_rejects_other_lines() -> None:
    data = b'{"customer_id": "c1"}\n\n[1, 2]\n{"amount": NaN}\n{broken\n{"customer_id": "c2"}\n'
    records, _, columns = read(data, name="x.jsonl")
    assert columns is None
    assert records[0] == (1, {"customer_id": "c1"}) and records[-1] == (6, {"customer_id": "c2"})
    reasons = {record.row: record.reason for record in records if isinstance(record, RowError)}
    assert set(reasons) == {3, 4, 5}
    assert "found an array" in reasons[3] and "NaN" in reasons[4] and "invalid JSON" in reasons[5]


def test_json_array_streams_elements_across_chunk_boundaries() -> None:
    elements = [{"customer_id": f"c{i}", "note": "x" * (i % 7000), "amount": 12345678 + i} for i in range(60)]
    records, _, _ = read(json.dumps(elements).encode(), name="x.json")
    assert [record for _, record in records] == elements
    assert [number for number, _ in records] == list(range(1, 61))


@pytest.mark.parametrize(
    ("body", "found"), [(b'{"customer_id": "c1"}', "an object"), (b'"text"', "a string"), (b"42", "a number")]
)
def test_json_top_level_that_is_not_an_array_is_a_file_error(body: bytes, found: str) -> None:
    with pytest.raises(ImportFileError, match=f"must be an array of objects, found {found}"):
        read(body, name="x.json")


def test_a_broken_json_array_element_names_its_row_and_where_in_it_the_json_breaks() -> None:
    records, _, _ = read(b'[{"customer_id": "c1"},\n {"customer_id": "c2", "note": "cut', name="x.json")
    assert records[0] == (1, {"customer_id": "c1"})
    error = records[1]
    assert isinstance(error, RowError) and error.row == 2, records
    assert error.reason == (
        "invalid JSON: Unterminated string (character 31 of the element); the rest of the file cannot be read"
    )


def test_json_array_element_that_is_not_an_object_is_a_row_error() -> None:
    records, _, _ = read(b'[{"customer_id": "c1"}, 3, {"customer_id": "c2"}]', name="x.json")
    assert records[1] == RowError(2, "*", "each element must be a JSON object, found a number")
    assert records[2] == (3, {"customer_id": "c2"})


def test_unknown_extension_asks_for_format() -> None:
    with pytest.raises(ImportFileError, match="--format"):
        read(b"a,b\n", name="data.bin")


# --- parsing ----------------------------------------------------------------------------------------------------------


def test_timestamps_in_every_documented_form_are_stored_in_utc() -> None:
    base = {"customer_id": "c1", "amount": "1"}
    forms = [
        "2024-03-01T14:30:00+01:00",
        "2024-03-01T13:30:00Z",
        "2024-03-01 08:30:00",  # naive: New York, UTC-5 in March before DST
        "1709299800",
    ]
    results = parse_rows("orders", [{**base, "date": form} for form in forms], time_zone="America/New_York")
    assert {result.values["placed_at"] for result in results} == {datetime(2024, 3, 1, 13, 30, tzinfo=UTC)}
    (day,) = parse_rows("orders", [{**base, "date": "20240301"}], time_zone="Asia/Shanghai")
    assert day.values["placed_at"] == datetime(2024, 2, 29, 16, 0, tzinfo=UTC)


def test_a_local_time_the_clocks_skipped_is_a_row_error_and_a_repeated_one_reads_as_the_first() -> None:
    base = {"customer_id": "c1", "amount": "1"}
    gap, repeated, offset = parse_rows(
        "orders",
        [
            {**base, "date": "2024-03-31T02:30:00"},  # Berlin went from 02:00 straight to 03:00
            {**base, "date": "2024-10-27T02:30:00"},  # and went through 02:00-03:00 twice
            {**base, "date": "2024-03-31T02:30:00+01:00"},  # an explicit offset is always one moment
        ],
        time_zone="Europe/Berlin",
    )

    assert errors_of(gap) == [
        (
            "placed_at",
            "2024-03-31T02:30:00 does not exist in Europe/Berlin: the clocks skipped it (daylight saving); give the "
            "time with its UTC offset (column 'date')",
        )
    ]
    assert repeated.values["placed_at"] == datetime(2024, 10, 27, 0, 30, tzinfo=UTC)  # CEST, the first reading
    assert offset.values["placed_at"] == datetime(2024, 3, 31, 1, 30, tzinfo=UTC)


def test_a_date_on_a_day_whose_midnight_the_clocks_skipped_is_its_first_instant() -> None:
    # Cairo went from 00:00 straight to 01:00 (+03:00) on 2025-04-25: the day exists, its midnight does not. A
    # date without a time was refused as a skipped time; a time of 00:00 given as such still is.
    base = {"customer_id": "c1", "amount": "1"}
    iso, digits, number, midnight = parse_rows(
        "orders",
        [
            {**base, "date": "2025-04-25"},
            {**base, "date": "20250425"},
            {**base, "date": 20250425},
            {**base, "date": "2025-04-25T00:00:00"},
        ],
        time_zone="Africa/Cairo",
    )
    (cell,) = parse_rows("orders", [{**base, "date": datetime(2025, 4, 25)}], time_zone="Africa/Cairo")  # xlsx date
    assert cell.values["placed_at"] == datetime(2025, 4, 24, 22, 0, tzinfo=UTC)

    first_instant = datetime(2025, 4, 24, 22, 0, tzinfo=UTC)  # 01:00 local, +03:00
    assert iso.values["placed_at"] == digits.values["placed_at"] == number.values["placed_at"] == first_instant
    assert [field for field, _ in errors_of(midnight)] == ["placed_at"]


def test_future_timestamp_is_rejected_but_small_clock_skew_is_not() -> None:
    base = {"customer_id": "c1", "amount": "1"}
    future, skew = parse_rows(
        "orders", [{**base, "date": "2030-01-01"}, {**base, "date": (NOW + timedelta(minutes=5)).isoformat()}]
    )
    assert errors_of(future) == [("placed_at", "2030-01-01T00:00:00+00:00 is in the future (column 'date')")]
    assert isinstance(skew, ParsedRow)


@pytest.mark.parametrize(
    ("amount", "status", "reason"),
    [
        ("NaN", "", "'NaN' is not a number"),
        ("inf", "", "'inf' is not a number"),
        ("1,000.00", "", "contains a comma"),
        ("12.345", "", "more than two decimal places"),
        ("-5.00", "completed", "needs status returned or refunded"),
        ("$5", "", "is not a number"),
    ],
)
def test_bad_amounts_are_rejected_with_a_reason(amount: str, status: str, reason: str) -> None:
    (result,) = parse_rows("orders", [{"customer_id": "c1", "date": "2024-01-01", "amount": amount, "status": status}])
    assert [field for field, _ in errors_of(result)] == ["amount"]
    assert reason in errors_of(result)[0][1]


def test_zero_and_refund_amounts_are_valid() -> None:
    zero, refund = parse_rows(
        "orders",
        [
            {"customer_id": "c1", "date": "2024-01-01", "amount": "0"},
            {"customer_id": "c1", "date": "2024-01-01", "amount": "-5.5", "status": "Refunded"},
        ],
    )
    assert zero.values["amount"] == Decimal("0.00")
    assert (refund.values["amount"], refund.values["status"]) == (Decimal("-5.50"), "refunded")


def test_nul_byte_and_overlong_text_name_their_field() -> None:
    row = {"customer_id": "c1", "sent_at": "2024-01-01", "text": "fine"}
    nul, long_text, ok = parse_rows(
        "messages",
        [{**row, "text": "a\x00b"}, {**row, "text": "x" * 101}, {**row, "text": "x" * 100}],
        max_text_chars=100,
    )
    assert errors_of(nul) == [("text", "contains a NUL byte (\\x00), which the database cannot store (column 'text')")]
    assert errors_of(long_text) == [("text", "is 101 characters long; the limit is 100 (column 'text')")]
    assert ok.values["text"] == "x" * 100


def test_html_and_script_in_text_are_kept_exactly() -> None:
    text = '<script>alert("x")</script> <b>bold</b> &amp;'
    (row,) = parse_rows("messages", [{"customer_id": "c1", "sent_at": "2024-01-01", "text": f"  {text}\n"}])
    assert row.values["text"] == f"  {text}\n"


def test_every_bad_field_of_a_row_is_reported_together() -> None:
    (result,) = parse_rows("orders", [{"customer_id": "", "date": "yesterday", "amount": "NaN"}])
    assert [field for field, _ in errors_of(result)] == ["customer_id", "placed_at", "amount"]


def test_customer_columns_not_mapped_go_to_attributes_with_numbers_typed() -> None:
    (row,) = parse_rows(
        "customers",
        [{"customerID": "7590-VHVEG", "tenure": "1", "Charges": "29.85", "Total": " ", "Zip": "0123", "Churn": "Yes"}],
        label_column="Churn",
        positive_label="Yes",
        drop_columns=frozenset({"Zip"}),
    )
    assert row.external_id == "7590-VHVEG" and row.values == {"churned": True}
    assert row.extra == {"tenure": 1, "Charges": 29.85, "Total": None}


def test_map_overrides_column_names_and_unknown_fields_are_refused() -> None:
    (row,) = parse_rows("customers", [{"CLIENTNUM": 768805383, "id": "other"}], field_map={"external_id": "CLIENTNUM"})
    assert row.external_id == "768805383" and row.extra == {"id": "other"}
    with pytest.raises(ImportFileError, match="no field 'nickname'"):
        RowParser(ImportOptions(kind="customers", field_map={"nickname": "x"}))


def test_missing_required_column_names_the_field_and_the_fix() -> None:
    with pytest.raises(ImportFileError, match=r"field 'amount'.*--map amount=COLUMN"):
        RowParser(ImportOptions(kind="orders")).check_columns(["customer_id", "date", "price"])


# --- identity ----------------------------------------------------------------------------------------------------------


def test_file_keys_count_occurrences_across_batches() -> None:
    keys = FileKeys()
    assert keys.occurrences([5, 7, 5]) == [1, 1, 2]
    assert keys.occurrences([7, 9, 5, 2**64 - 1]) == [2, 1, 3, 1]
    assert keys.occurrences([2**64 - 1, 0]) == [2, 1]


def _orders(*amounts: str) -> list[ParsedRow]:
    rows = parse_rows("orders", [{"customer_id": "c1", "date": "2024-01-01", "amount": amount} for amount in amounts])
    assert all(isinstance(row, ParsedRow) for row in rows)
    return rows  # type: ignore[return-value]


def test_identical_rows_get_distinct_deterministic_ids() -> None:
    first, second = _orders("10", "10", "11"), _orders("10", "10", "11")
    assign_external_ids(kind="orders", rows=first, keys=FileKeys())
    keys = FileKeys()  # the same file read again in two batches
    assign_external_ids(kind="orders", rows=second[:1], keys=keys)
    assign_external_ids(kind="orders", rows=second[1:], keys=keys)
    ids = [row.external_id for row in first]
    assert len(set(ids)) == 3 and all(external_id.startswith("auto-") for external_id in ids)
    assert ids == [row.external_id for row in second]


def test_repeated_explicit_id_in_a_file_is_rejected_after_its_first_row() -> None:
    rows = parse_rows(
        "orders", [{"order_id": "o1", "customer_id": "c1", "date": "2024-01-01", "amount": str(n)} for n in range(3)]
    )
    errors = assign_external_ids(kind="orders", rows=rows, keys=FileKeys())  # type: ignore[arg-type]
    assert [row.row for row in rows] == [2]
    assert [(error.row, error.field) for error in errors] == [(3, "external_id"), (4, "external_id")]
    assert "appears more than once in this file" in errors[0].reason


def _ids(kind: str, records: list[dict[str, object]], **options: object) -> list[str]:
    rows = parse_rows(kind, records, **options)
    assign_external_ids(kind=kind, rows=rows, keys=FileKeys())  # type: ignore[arg-type]
    return [row.external_id for row in rows]  # type: ignore[union-attr]


def test_deterministic_ids_are_those_of_earlier_releases() -> None:
    """A database filled by an earlier release gets nothing new when the same file comes again."""
    assert _ids(
        "orders",
        [
            {"customer_id": "c1", "date": "2024-01-05", "amount": "10.50"},
            {"customer_id": "c1", "date": "2024-01-05", "amount": "10.5"},  # the same order again
            {"customer_id": "c2", "date": "20240106", "amount": "0"},
            {
                "customer_id": "c3",
                "date": "1704067200",
                "amount": "7",
                "status": "Returned",
                "currency": "eur",
                "items": "3",
                "discount": "1.5",
            },
        ],
    ) == [
        "auto-0065974680-61b34460d67e7a29f742",
        "auto-0065974680-612ef6544ca118135720",
        "auto-0065989800-d1a685d8f5f96e69d846",
        "auto-0065920080-b5b3179aa61e446f9c84",
    ]
    assert _ids(
        "events",
        [
            {"customer_id": "c1", "type": "search", "timestamp": "2024-01-01T10:00:00Z", "query": "shoes", "n": "3"},
            {"customer_id": "c1", "type": "login", "timestamp": "2024-01-01T10:00:00+02:00"},
        ],
    ) == ["auto-0065928d20-b3047dff9b870ac84f52", "auto-0065927100-16c4ab857183873f8170"]
    assert _ids(
        "messages",
        [
            {"customer_id": "c1", "sent_at": "2024-01-01T10:00:00", "text": " hi 王 "},
            {
                "customer_id": "c1",
                "sent_at": "2024-01-01T10:00:00",
                "text": " hi 王 ",
                "conversation_id": "c1",
                "channel": "Email",
            },
        ],
        time_zone="Europe/Berlin",
    ) == ["auto-0065927f10-024edd51d882ec70737d", "auto-0065927f10-47414970aea8b1ce5bd0"]


# --- prepared rows: the short way for plain records gives what parse() gives ----------------------------------------

_LAYOUTS: dict[str, tuple[tuple[str, ...], dict[str, object]]] = {
    "orders": (
        ("placed_at", "amount", "currency", "item_count", "status", "discount_amount"),
        {"currency": "USD", "item_count": 1, "status": "completed", "discount_amount": Decimal("0.00")},
    ),
    "events": (("kind", "occurred_at", "properties"), {}),
    "messages": (
        ("conversation_id", "channel", "author_role", "sent_at", "text"),
        {"channel": "chat", "author_role": "customer"},
    ),
}
_TIMES = ["2024-03-01T14:30:00+01:00", "2024-03-01 08:30:00", "2024-03-01T13:30:00Z", "20240301", "1709299800",
          "2024-03-01T13:30:00.250+00:00", " 2024-03-01T13:30:00+00:00 ", "2031-01-01", "yesterday", "", "  "]  # fmt: skip
_VALUES = {
    "order_id": ["", "o1", "o2", " o3 ", "o\x00", "x" * 300],
    "customer_id": ["c1", "c2", " c3 ", "", "  ", "c\x00", "Zoë 王", "x" * 256],
    "date": _TIMES,
    "amount": ["10.50", "10.5", "0", "-5", "-5.00", "+7", "1,000.00", "NaN", "12.345", "1e3", "", " 3 ", "0012.30"],
    "currency": ["", "eur", "USD", "EURO", " gbp "],
    "items": ["", "3", "0", "-1", "007", "2.0"],
    "status": ["", "Completed", "returned", "REFUNDED", "lost"],
    "discount": ["", "1.5", "-1", "0.00"],
    "event_id": ["", "e1", "e2"],
    "type": ["search", "login", "", " page_view ", "x" * 65],
    "timestamp": _TIMES,
    "query": ["shoes", "", " ", "42", "007", "1.5e3", "inf", "a\x00b"],
    "page": ["/", "12", "", "-3"],
    "message_id": ["", "m1"],
    "sent_at": _TIMES,
    "text": ["hi", "  ", "", " padded ", "<b>x</b>", "a\x00b", "y" * 101],
    "conversation_id": ["", "t1", " ", "t2"],
    "channel": ["", "Email", "fax"],
    "role": ["", "agent", "robot"],
}
_HEADERS = {
    "orders": ["order_id", "customer_id", "date", "amount", "currency", "items", "status", "discount"],
    "events": ["event_id", "customer_id", "type", "timestamp", "query", "page"],
    "messages": ["message_id", "customer_id", "sent_at", "text", "conversation_id", "channel", "role"],
}


@pytest.mark.parametrize("kind", ["orders", "events", "messages"])
def test_prepared_rows_are_the_same_the_short_way_and_through_parse(kind: str) -> None:
    import random

    rng = random.Random(kind)
    options = ImportOptions(kind=kind, now=NOW, time_zone="Europe/Paris", max_text_chars=100)
    columns, defaults = _LAYOUTS[kind]
    header = _HEADERS[kind]
    records = []
    for _ in range(3000):
        present = [column for column in header if column == "customer_id" or rng.random() < 0.8]
        # mostly the plain values each list starts with, as in a real file; the others now and then
        records.append({column: rng.choice(_VALUES[column][: 2 if rng.random() < 0.9 else None]) for column in present})
    # many rows of a plain file repeat: identical rows must stay apart, and explicit ids repeat too
    records += records[:200]
    short_way = 0
    for shape in {tuple(record) for record in records}:
        parser = RowParser(options)
        plan = parser.plan(shape)
        fast = PreparedRows(parser, columns=columns, defaults=defaults, keys=FileKeys())
        slow = PreparedRows(parser, columns=columns, defaults=defaults, keys=FileKeys())
        batch_fast, batch_slow = [], []
        for row, record in enumerate(records, start=2):
            if tuple(record) != shape:
                continue
            got = fast.prepare(row, record, plan)
            parsed = parser.parse(row, record, plan)
            expected = parsed if isinstance(parsed, list) else slow.from_parsed(parsed)
            assert got == expected, record
            if not isinstance(got, list):
                short_way += fast._short_way(plan)(row, record) is not None  # type: ignore[misc]
                batch_fast.append(got)
                batch_slow.append(parsed)
        identified, errors = fast.identify(batch_fast)
        assigned_errors = assign_external_ids(kind=kind, rows=batch_slow, keys=FileKeys())
        assert errors == assigned_errors
        assert [row[:3] for row in identified] == [
            (parsed.row, parsed.external_id, parsed.customer_external_id) for parsed in batch_slow
        ]
    assert short_way > 1000  # the short way was taken, not only parse()


# --- input a stricter reader used to crash on, or read wrongly -------------------------------------------------------


def test_unpaired_surrogates_are_a_field_error_not_a_crash_at_write_time() -> None:
    records, _, _ = read(b'{"customer_id": "c1", "text": "hi \\ud83d", "sent_at": "2024-01-01"}\n', name="m.jsonl")
    (result,) = parse_rows("messages", [records[0][1]])
    assert errors_of(result)[0][0] == "text" and "not valid Unicode" in errors_of(result)[0][1]
    (name,) = parse_rows("customers", [{"customer_id": "c1", "name": "Zo\ud83d"}])
    assert [field for field, _ in errors_of(name)] == ["name"]


def test_an_illegal_utf16_unit_rejects_its_row_and_the_rest_still_imports() -> None:
    good = "customer_id,date,amount\r\nc1,2024-01-01,1\r\n".encode("utf-16-le")
    bad = "c2,2024-01-02,".encode("utf-16-le") + b"\x00\xd8" + "\r\nc3,2024-01-03,3\r\n".encode("utf-16-le")
    records, _, _ = read(codecs.BOM_UTF16_LE + good + bad)
    parsed = parse_rows("orders", [record[1] for record in records])
    assert isinstance(parsed[0], ParsedRow) and isinstance(parsed[2], ParsedRow)
    assert errors_of(parsed[1])[0][0] == "amount"


def test_bytes_that_do_not_decode_late_in_a_json_array_reject_their_element_only() -> None:
    elements = [{"customer_id": f"c{i}", "date": "2024-01-01", "amount": 1, "note": "x" * 200} for i in range(600)]
    body = json.dumps(elements).encode()
    body = body.replace(b'"c590"', b'"c590\xff"')  # past the first 64 KiB

    records, _, _ = read(body, name="orders.json")
    parsed = parse_rows("orders", [record[1] for record in records])

    assert len(parsed) == 600 and sum(isinstance(p, list) for p in parsed) == 1
    assert errors_of(parsed[590])[0][0] == "customer_id"


def test_json_containers_and_booleans_are_not_text() -> None:
    results = parse_rows(
        "customers", [{"customer_id": ["c1"]}, {"customer_id": True}, {"customer_id": "c", "name": {"a": 1}}]
    )
    assert [errors_of(r) for r in results] == [
        [("external_id", "is an array, not text (column 'customer_id')")],
        [("external_id", "is a boolean, not text (column 'customer_id')")],
        [("name", "is an object, not text (column 'name')")],
    ]


def test_a_trailing_delimiter_on_every_line_is_accepted() -> None:
    records, _, columns = read(b"customer_id,date,amount,\nc1,2024-01-01,1,\nc2,2024-01-02,2,\n")
    assert columns == ["customer_id", "date", "amount"] and [r[0] for r in records] == [2, 3]


def test_a_row_that_a_late_closing_quote_made_of_several_lines_loses_none_of_them() -> None:
    data = b'customer_id,date,amount\nc1,"2024-01-01,1\nc2,2024-01-02,2\nc3",2024-01-03,3\nc4,2024-01-04,4\n'
    records, _, _ = read(data)
    ids = [record[1]["customer_id"] for record in records if isinstance(record, tuple)]
    assert isinstance(records[0], RowError) and records[0].row == 2
    assert "c2" in ids and "c4" in ids  # the swallowed line 3 is read again as its own row


def test_a_year_or_a_spreadsheet_day_number_is_not_read_as_1970() -> None:
    results = parse_rows("orders", [{"customer_id": "c1", "date": value, "amount": "1"} for value in ("2024", "45292")])
    assert all(errors_of(r)[0][0] == "placed_at" and "is not a date" in errors_of(r)[0][1] for r in results)
    (epoch,) = parse_rows("orders", [{"customer_id": "c1", "date": "1700000000", "amount": "1"}])
    assert epoch.values["placed_at"] == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)


def test_a_phone_number_attribute_keeps_its_plus_and_auto_ids_are_reserved() -> None:
    (customer,) = parse_rows("customers", [{"customer_id": "c1", "phone": "+14155551234", "zip": "02134"}])
    assert customer.extra == {"phone": "+14155551234", "zip": "02134"}
    (order,) = parse_rows("orders", [{"order_id": "auto-1", "customer_id": "c1", "date": "2024-01-01", "amount": "1"}])
    assert errors_of(order) == [("external_id", "ids starting with 'auto-' are reserved for generated ids")]


def test_a_delimiter_of_several_characters_is_a_file_error() -> None:
    with pytest.raises(ImportFileError, match="the delimiter must be one character"):
        read(b"customer_id;;date\n", delimiter=";;")


def test_a_file_with_carriage_returns_only_is_refused_in_plain_words() -> None:
    with pytest.raises(ImportFileError, match="end with a carriage return only"):
        read(b"customer_id,date,amount\rc1,2024-01-01,1\rc2,2024-01-02,2\r")
    records, _, _ = read(b"customer_id,date,amount\r\nc1,2024-01-01,1\r\n")  # CRLF stays fine
    assert records[0][0] == 2
