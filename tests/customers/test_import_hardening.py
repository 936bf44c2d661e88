"""Ingestion findings of an audit, each pinned: true/false labels, deep nesting, a sheet damaged part way,
numbers as dates, reserved ids through the CSV fast path, a --positive that matches nothing, rows of delimiters,
and report paths checked before anything is written."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from customers.models import Customer, Event, ImportRun, Order
from tests.customers.test_import_command import run_import, write

pytestmark = pytest.mark.django_db


def _xlsx(rows: list[list[object]]) -> bytes:
    from openpyxl import Workbook

    workbook = Workbook()
    for row in rows:
        workbook.active.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def test_true_and_false_labels_compare_with_positive_as_words_in_any_case() -> None:
    spreadsheet = _xlsx([["customer_id", "Churned"], ["x1", True], ["x2", False]])
    lines = '{"customer_id": "j1", "Churn": true}\n{"customer_id": "j2", "Churn": [1]}\n'

    sheet = run_import("customers", spreadsheet, name="l.xlsx", label_column="Churned", positive_label="TRUE")
    jsonl = run_import("customers", lines, name="l.jsonl", label_column="Churn", positive_label="true")

    assert (sheet.rows_imported, sheet.rows_rejected) == (2, 0)
    assert dict(Customer.objects.values_list("external_id", "churned")) == {"x1": True, "x2": False, "j1": True}
    assert [(e.row, e.field) for e in jsonl.errors] == [(2, "churned")] and "is an array, not text" in jsonl.errors[
        0
    ].reason


def test_a_positive_value_no_row_has_is_said_in_a_note() -> None:
    result = run_import(
        "customers", "customer_id,Churn\nq1,Yes\nq2,No\n", label_column="Churn", positive_label="Churned"
    )

    assert result.rows_imported == 2
    assert any("no row has Churn = 'Churned' (values seen: 'No', 'Yes')" in note for note in result.notes), result.notes
    assert not run_import("customers", "customer_id,Churn\nq3,yes\n", label_column="Churn", positive_label="Yes").notes


def test_a_value_nested_too_deeply_rejects_its_row_and_the_others_are_imported() -> None:
    deep: object = 1
    for _ in range(600):
        deep = {"a": deep}
    lines = [{"customer_id": "c1", "event_type": "view", "time": f"2024-01-0{day}T10:00:00Z"} for day in (1, 2, 3)]
    lines[1]["props"] = deep

    result = run_import("events", "\n".join(json.dumps(line) for line in lines), name="e.jsonl", batch_size=1)

    assert [(e.row, e.field) for e in result.errors] == [(2, "properties.props")]
    assert "nested more than 64 levels" in result.errors[0].reason
    assert (result.rows_imported, Event.objects.count()) == (2, 2)


def test_a_sheet_damaged_part_way_keeps_the_rows_read_and_says_where_it_stopped() -> None:
    rows = [["customer_id", "name"]] + [[f"c{i}", f"name {i}"] for i in range(3000)]
    damaged = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(_xlsx(rows))) as source, zipfile.ZipFile(damaged, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            target.writestr(item, data[: len(data) * 8 // 10] if item.filename.endswith("sheet1.xml") else data)

    result = run_import("customers", damaged.getvalue(), name="big.xlsx", batch_size=500)

    (error,) = result.errors
    assert error.field == "*" and "cannot be read from this row on" in error.reason, error
    assert 0 < result.rows_imported == Customer.objects.count() < 3000
    assert error.row == result.rows_imported + 2, "the first row not read, counted like sheet rows"
    assert ImportRun.objects.get().status == ImportRun.Status.COMPLETED_WITH_ERRORS


def test_numbers_as_dates_follow_the_rules_of_the_same_digits_as_text() -> None:
    body = json.dumps(
        [
            {"customer_id": "c1", "order_id": "o1", "placed_at": 20240301, "amount": "5"},
            {"customer_id": "c1", "order_id": "o2", "placed_at": 1709251200, "amount": "5"},
            {"customer_id": "c1", "order_id": "o3", "placed_at": 2024, "amount": "5"},
            {"customer_id": "c1", "order_id": "o4", "placed_at": 45292, "amount": "5"},
            {"customer_id": "c1", "order_id": "o5", "placed_at": 45292.5, "amount": "5"},
        ]
    )

    result = run_import("orders", body, name="o.json")

    assert [(e.row, e.field) for e in result.errors] == [(3, "placed_at"), (4, "placed_at"), (5, "placed_at")]
    placed = dict(Order.objects.values_list("external_id", "placed_at"))
    assert {key: value.date().isoformat() for key, value in placed.items()} == {"o1": "2024-03-01", "o2": "2024-03-01"}


def test_reserved_auto_ids_are_refused_from_csv_as_from_json() -> None:
    result = run_import("orders", "order_id,customer_id,placed_at,amount\nauto-0000000000-deadbeef,c1,2024-01-01,5\n")

    assert [(e.row, e.field) for e in result.errors] == [(2, "external_id")] and not Order.objects.exists()


def test_rows_of_delimiters_only_are_skipped_as_blank_lines_are() -> None:
    result = run_import("customers", "customer_id,name,segment\nb1,A,x\n,,\n , ,\n")

    assert (result.rows_imported, result.rows_rejected, result.rows_total) == (1, 0, 1)


def test_import_options_that_cannot_work_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    path = write(tmp_path, "c.csv", "customer_id,Churn\nc1,Yes\n")
    for extra, message in (
        (["--positive", "Yes"], "give --label-col too"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--report", str(tmp_path)], "is a directory"),
    ):
        with pytest.raises(CommandError, match=message):
            call_command("churn_import", "customers", str(path), *extra, stdout=io.StringIO())
    assert not Customer.objects.exists() and not ImportRun.objects.exists()
    report = tmp_path / "new" / "folder" / "report.json"  # missing folders are made
    call_command("churn_import", "customers", str(path), "--report", str(report), stdout=io.StringIO())
    assert json.loads(report.read_text())["summary"]["rows_imported"] == 1


def test_a_sheet_whose_header_is_not_the_first_row_says_so() -> None:
    from customers.importers import ImportFileError

    with pytest.raises(ImportFileError, match="the first row is empty: the header .* must be the first row"):
        run_import("customers", _xlsx([[None, None], ["customer_id", "name"], ["c1", "A"]]), name="late.xlsx")


def test_when_an_order_was_returned_is_imported_and_snapshots_before_it_read_it_as_completed() -> None:
    from datetime import UTC, datetime

    from ml.features import FeatureBuilder
    from ml.snapshot import snapshot_at
    from predictions.selectors import customer_histories

    rows = (
        "order_id,customer_id,placed_at,amount,status,returned_at\n"
        "o1,c1,2024-01-05T10:00:00Z,40,returned,2024-02-10T09:00:00Z\n"
        "o2,c1,2024-01-06T10:00:00Z,30,completed,2024-02-10T09:00:00Z\n"
        "o3,c1,2024-01-07T10:00:00Z,20,refunded,2024-01-01T09:00:00Z\n"
        "o4,c1,2024-01-08T10:00:00Z,10,completed,\n"
    )

    result = run_import("orders", rows)

    assert [(e.row, e.field) for e in result.errors] == [(3, "status_changed_at"), (4, "status_changed_at")]
    assert (
        "this one is completed" in result.errors[0].reason and "before the order was placed" in result.errors[1].reason
    )
    (history,) = customer_histories()
    cutoffs = [datetime(2024, 2, 1, tzinfo=UTC), datetime(2024, 3, 1, tzinfo=UTC)]
    snapshots = [snapshot_at(history, cutoff) for cutoff in cutoffs]
    assert [[o.status for o in s.orders] for s in snapshots] == [["completed", "completed"], ["returned", "completed"]]
    assert list(FeatureBuilder().build(snapshots)["returns_total"]) == [0.0, 1.0]
    assert run_import("orders", rows).rows_unchanged == 2, "a re-import changes nothing"
