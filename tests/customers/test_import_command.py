"""The churn_import command and the import service behind it, against the test database."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from customers import ingest
from customers.ingest import import_file, import_options_from_settings
from customers.models import Customer, Event, ImportRun, Message, Order

pytestmark = pytest.mark.django_db

TRANSACTIONS = "customer_id,date,amount\nc1,2024-01-05,10.50\nc1,2024-01-05,10.50\nc2,20240106,0\nc3,1704067200,7\n"


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def run_import(kind: str, content: str | bytes, *, name: str = "data.csv", **options: object) -> ingest.ImportResult:
    data = content.encode() if isinstance(content, str) else content
    batch_size = options.pop("batch_size", 5000)
    after_batch = options.pop("after_batch", None)
    return import_file(
        stream=io.BytesIO(data),
        source=name,
        options=import_options_from_settings(kind=kind, **options),
        batch_size=batch_size,  # type: ignore[arg-type]
        after_batch=after_batch,  # type: ignore[arg-type]
    )


def test_transaction_log_imports_as_orders_with_minimal_customers(tmp_path: Path, capsys) -> None:
    call_command("churn_import", "orders", str(write(tmp_path, "log.csv", TRANSACTIONS)))
    assert Order.objects.count() == 4
    assert sorted(Customer.objects.filter(is_minimal=True).values_list("external_id", flat=True)) == ["c1", "c2", "c3"]
    run = ImportRun.objects.get()
    assert (run.status, run.rows_imported, run.customers_created) == ("completed", 4, 3)
    assert "imported 4" in capsys.readouterr().out


def test_reimport_of_same_file_adds_nothing_and_identical_rows_stay_two_orders(tmp_path: Path) -> None:
    path = write(tmp_path, "log.csv", TRANSACTIONS)
    call_command("churn_import", "orders", str(path))
    first = set(Order.objects.values_list("external_id", flat=True))
    call_command("churn_import", "orders", str(path))
    assert set(Order.objects.values_list("external_id", flat=True)) == first and len(first) == 4
    assert Order.objects.filter(customer__external_id="c1", amount="10.50").count() == 2
    rerun = ImportRun.objects.order_by("-id").first()
    assert (rerun.rows_imported, rerun.rows_unchanged, rerun.customers_created) == (0, 4, 0)


def test_rejected_rows_fail_the_command_and_every_error_is_in_the_report(tmp_path: Path) -> None:
    content = TRANSACTIONS + 'c4,2099-01-01,5\nc5,2024-01-01,NaN\nc6,2024-01-01,-3\nc7,2024-01-01,"1,000.00"\n'
    report = tmp_path / "report.json"
    with pytest.raises(CommandError, match="4 row\\(s\\) rejected"):
        call_command("churn_import", "orders", str(write(tmp_path, "log.csv", content)), "--report", str(report))
    assert Order.objects.count() == 4
    document = json.loads(report.read_text())
    assert document["summary"]["rows_rejected"] == 4
    assert [(error["row"], error["field"]) for error in document["errors"]] == [
        (6, "placed_at"),
        (7, "amount"),
        (8, "amount"),
        (9, "amount"),
    ]
    assert ImportRun.objects.get().status == ImportRun.Status.COMPLETED_WITH_ERRORS


def test_import_killed_inside_a_batch_leaves_no_half_batch_and_a_rerun_completes_it(monkeypatch) -> None:
    content = "customer_id,date,amount\n" + "".join(f"c{n % 3},2024-01-0{1 + n % 9},{n}\n" for n in range(10))
    real_insert = ingest._insert_ignoring_conflicts
    calls = {"orders": 0}

    def insert_then_die(*, model, columns, rows, **options):  # noqa: ANN001, ANN003, ANN202
        inserted = real_insert(model=model, columns=columns, rows=rows, **options)
        if model is Order:
            calls["orders"] += 1
            if calls["orders"] == 2:
                raise KeyboardInterrupt("killed after writing batch 2, before its commit")
        return inserted

    monkeypatch.setattr(ingest, "_insert_ignoring_conflicts", insert_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_import("orders", content, batch_size=4)
    assert Order.objects.count() == 4  # batch 1 committed; batch 2 rolled back as a whole
    assert ImportRun.objects.get().status == ImportRun.Status.FAILED

    monkeypatch.setattr(ingest, "_insert_ignoring_conflicts", real_insert)
    result = run_import("orders", content, batch_size=4)
    assert (result.rows_imported, result.rows_unchanged, Order.objects.count()) == (6, 4, 10)
    assert sorted(Order.objects.values_list("amount", flat=True)) == list(range(10))


def test_duplicate_ids_in_a_file_and_against_the_database_are_reported() -> None:
    header = "order_id,customer_id,date,amount\n"
    first = run_import("orders", header + "o1,c1,2024-01-01,5\no2,c1,2024-01-02,6\no1,c1,2024-01-03,7\n")
    assert (first.rows_imported, first.rows_rejected) == (2, 1)
    assert "appears more than once in this file" in first.errors[0].reason and first.errors[0].row == 4

    second = run_import("orders", header + "o1,c1,2024-01-01,5\no2,c1,2024-01-02,60\no3,c2,2024-01-02,1\n")
    assert (second.rows_imported, second.rows_unchanged, second.rows_rejected) == (1, 1, 1)
    (error,) = second.errors
    assert (error.row, error.field) == (3, "external_id")
    assert "already stored with a different amount" in error.reason
    assert Order.objects.get(external_id="o2").amount == 6


def test_customers_upsert_fills_minimal_customers_and_reports_unchanged_rows(tmp_path: Path) -> None:
    run_import("orders", TRANSACTIONS)
    profile = "customer_id,name,email,Contract,Churn\nc1,Ada,ada@example.com,Month-to-month,Yes\nc9,Bo,,Two year,No\n"
    path = write(tmp_path, "profile.csv", profile)
    call_command("churn_import", "customers", str(path), "--label-col", "Churn", "--positive", "Yes")
    ada = Customer.objects.get(external_id="c1")
    assert (ada.name, ada.email, ada.churned, ada.is_minimal) == ("Ada", "ada@example.com", True, False)
    assert ada.attributes == {"Contract": "Month-to-month"} and ada.orders.count() == 2
    assert Customer.objects.get(external_id="c9").churned is False

    call_command("churn_import", "customers", str(path), "--label-col", "Churn", "--positive", "Yes")
    assert ImportRun.objects.order_by("-id").first().rows_unchanged == 2
    changed = run_import("customers", profile.replace("Month-to-month", "One year"), label_column="Churn")
    assert (changed.rows_imported, changed.rows_unchanged) == (1, 1)
    assert Customer.objects.get(external_id="c1").attributes == {"Contract": "One year"}


def test_bank_style_file_imports_with_map_label_and_dropped_columns(tmp_path: Path) -> None:
    content = (
        "CLIENTNUM,Attrition_Flag,Customer_Age,Naive_Bayes_Classifier_1,Naive_Bayes_Classifier_2\n"
        '768805383,"Existing Customer",45,9.3448e-05,0.99991\n818770008,"Attrited Customer",49,0.99,0.01\n'
    )
    call_command(
        "churn_import", "customers", str(write(tmp_path, "BankChurners.csv", content)),
        "--map", "external_id=CLIENTNUM", "--label-col", "Attrition_Flag", "--positive", "Attrited Customer",
        "--drop-col", "Naive_Bayes_Classifier_1", "Naive_Bayes_Classifier_2",
    )  # fmt: skip
    rows = dict(Customer.objects.values_list("external_id", "churned"))
    assert rows == {"768805383": False, "818770008": True}
    assert Customer.objects.get(external_id="818770008").attributes == {"Customer_Age": 49}


def test_xlsx_sheet_is_read_by_name(tmp_path: Path) -> None:
    from openpyxl import Workbook

    workbook = Workbook()
    workbook.active.title = "Other"
    sheet = workbook.create_sheet("E Comm")
    sheet.append(["CustomerID", "Churn", "Tenure", "CashbackAmount"])
    sheet.append([50001, 1, 4, 159.93])
    sheet.append([50002, 0, None, 120.9])
    path = tmp_path / "ecommerce.xlsx"
    workbook.save(path)
    call_command("churn_import", "customers", str(path), "--sheet", "E Comm", "--label-col", "Churn", "--positive", "1")
    first = Customer.objects.get(external_id="50001")
    assert first.churned is True and first.attributes == {"Tenure": 4, "CashbackAmount": 159.93}
    assert Customer.objects.get(external_id="50002").churned is False
    with pytest.raises(CommandError, match="no sheet 'Missing'"):
        call_command("churn_import", "customers", str(path), "--sheet", "Missing")


def test_events_keep_unmapped_columns_as_properties() -> None:
    result = run_import(
        "events", '{"customer_id": "c1", "type": "search", "timestamp": "2024-01-01T10:00:00Z", "query": "shoes"}\n',
        name="events.jsonl",
    )  # fmt: skip
    event = Event.objects.get()
    assert result.rows_imported == 1 and (event.kind, event.properties) == ("search", {"query": "shoes"})


def test_nul_bytes_and_html_in_messages(tmp_path: Path) -> None:
    content = (
        "customer_id,sent_at,text\n"
        "c1,2024-01-01T10:00:00,plain\n"
        "c1,2024-01-01T10:01:00,bad\x00byte\n"
        'c1,2024-01-01T10:02:00,"<script>alert(1)</script><b>hi</b>"\n'
    )
    result = run_import("messages", content)
    assert (result.rows_imported, result.rows_rejected) == (2, 1)
    assert (result.errors[0].row, result.errors[0].field) == (3, "text")
    assert Message.objects.filter(text="<script>alert(1)</script><b>hi</b>").exists()


def test_ten_megabyte_text_is_rejected_under_the_configured_limit_and_kept_above_it(settings) -> None:
    huge = "x" * (10 * 1024 * 1024)
    content = f"customer_id,sent_at,text\nc1,2024-01-01,{huge}\nc1,2024-01-02,small\n"
    result = run_import("messages", content)
    assert (result.rows_imported, result.rows_rejected) == (1, 1)
    assert (result.errors[0].field, result.errors[0].reason) == (
        "text",
        "is 10,485,760 characters long; the limit is 1,000,000 (column 'text')",
    )
    settings.CHURN_IMPORT_MAX_TEXT_CHARS = 11 * 1024 * 1024
    again = run_import("messages", content)
    assert (again.rows_imported, again.rows_unchanged) == (1, 1)
    assert Message.objects.filter(text=huge).exists()


def test_dry_run_counts_everything_and_writes_nothing(tmp_path: Path, capsys) -> None:
    call_command("churn_import", "orders", str(write(tmp_path, "log.csv", TRANSACTIONS)), "--dry-run")
    assert (Order.objects.count(), Customer.objects.count()) == (0, 0)
    run = ImportRun.objects.get()
    assert (run.dry_run, run.rows_imported, run.customers_created) == (True, 4, 3)
    assert "would import 4" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", "", "the file is empty"),
        ("log.csv", "customer_id,date,price\nc1,2024-01-01,1\n", "missing required column for orders field 'amount'"),
        ("log.json", '{"customer_id": "c1"}', "must be an array of objects"),
    ],
)
def test_unreadable_file_fails_the_command_and_marks_the_run_failed(
    tmp_path: Path, name: str, content: str, message: str
) -> None:
    with pytest.raises(CommandError, match=message):
        call_command("churn_import", "orders", str(write(tmp_path, name, content)))
    run = ImportRun.objects.get()
    assert run.status == ImportRun.Status.FAILED and message in run.errors[0]["reason"]
    assert Order.objects.count() == 0


def test_time_zone_option_reads_naive_times_in_that_zone(tmp_path: Path) -> None:
    path = write(tmp_path, "log.csv", "customer_id,date,amount\nc1,2024-07-01 09:00,1\n")
    call_command("churn_import", "orders", str(path), "--time-zone", "Europe/Berlin")
    assert Order.objects.get().placed_at.isoformat() == "2024-07-01T07:00:00+00:00"


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_postgresql_copy_path_rejects_nul_bytes_and_stays_idempotent() -> None:
    assert connection.vendor == "postgresql"
    content = (
        "customer_id,sent_at,text\n"
        + "".join(f"c{n % 5},2024-01-01T10:{n:02d}:00,message {n}\n" for n in range(30))
        + "c1,2024-01-02,bad\x00byte\nc1,2024-01-02,same\nc1,2024-01-02,same\n"
    )
    first = run_import("messages", content, batch_size=7)
    assert (first.rows_imported, first.rows_rejected, first.customers_created) == (32, 1, 5)
    assert (first.errors[0].row, first.errors[0].field) == (32, "text")
    again = run_import("messages", content, batch_size=7)
    assert (again.rows_imported, again.rows_unchanged, Message.objects.count()) == (0, 32, 32)
    orders = run_import("orders", TRANSACTIONS)
    assert orders.rows_imported == 4 and Order.objects.filter(amount=0).count() == 1
    # binary COPY: every column type comes back as it went in
    events = run_import(
        "events",
        'customer_id,type,timestamp,query,page,price\nc1,search,2024-01-01T10:00:00.5+02:00,"王 😀 ""x""",,-1.5\n',
    )
    assert events.rows_imported == 1
    event = Event.objects.get()
    assert event.properties == {"query": '王 😀 "x"', "page": None, "price": -1.5}
    assert event.occurred_at.isoformat() == "2024-01-01T08:00:00.500000+00:00"
    order = Order.objects.get(customer__external_id="c3")
    assert (order.amount, order.currency, order.item_count, order.status) == (7, "USD", 1, "completed")
    assert Customer.objects.get(external_id="c3").attributes == {}


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_postgresql_overlapping_file_copies_new_batches_straight_and_skips_stored_rows(monkeypatch) -> None:
    """A first import COPYs into the table itself; a batch with stored rows goes through the scratch table."""
    assert connection.vendor == "postgresql"
    header = "customer_id,date,amount\n"
    rows = [f"c{n % 4},2024-04-{1 + n % 28:02d},{n}\n" for n in range(50)]
    assert run_import("orders", header + "".join(rows[:30]), batch_size=7).rows_imported == 30
    real_insert = ingest._insert_ignoring_conflicts
    seen: list[bool] = []

    def spy(*, model, columns, rows, direct=False):  # noqa: ANN001, ANN202
        if model is Order:
            seen.append(direct)
        return real_insert(model=model, columns=columns, rows=rows, direct=direct)

    monkeypatch.setattr(ingest, "_insert_ignoring_conflicts", spy)
    result = run_import("orders", header + "".join(rows[20:]), batch_size=7)  # rows 20-29 are stored already
    assert (result.rows_imported, result.rows_unchanged, Order.objects.count()) == (20, 10, 50)
    # batch 1 (all stored): the COPY clashes, the scratch table skips them all; batch 2 (3 stored, 4 new) goes
    # through the scratch table; batch 3 does too and is all new, so batches 4 and 5 are copied straight again
    assert seen == [True, False, False, True, True]
    assert sorted(Order.objects.values_list("amount", flat=True)) == list(range(50))


@pytest.mark.django_db(transaction=True)
def test_writer_thread_failure_stops_the_import_and_a_rerun_completes_it() -> None:
    content = "customer_id,date,amount\n" + "".join(f"c{n % 4},2024-02-{1 + n % 28:02d},{n}\n" for n in range(50))

    def die_after_batch(number: int) -> None:
        if number == 3:
            raise RuntimeError("killed after batch 3")

    assert not connection.in_atomic_block  # so the import writes on its own thread
    with pytest.raises(RuntimeError, match="killed after batch 3"):
        run_import("orders", content, batch_size=7, after_batch=die_after_batch)
    assert Order.objects.count() == 21 and ImportRun.objects.get().status == ImportRun.Status.FAILED
    result = run_import("orders", content, batch_size=7)
    assert (result.rows_imported, result.rows_unchanged, Order.objects.count()) == (29, 21, 50)


def test_customer_id_cache_stays_bounded_and_correct(monkeypatch) -> None:
    monkeypatch.setattr(ingest, "_CUSTOMER_CACHE_LIMIT", 3)
    content = "customer_id,date,amount\n" + "".join(f"c{n % 5},2024-03-{1 + n:02d},{n}\n" for n in range(20))
    result = run_import("orders", content, batch_size=3)
    assert (result.rows_imported, result.customers_created) == (20, 5)
    assert {f"c{n}": 4 for n in range(5)} == {
        customer.external_id: customer.orders.count() for customer in Customer.objects.all()
    }


def test_a_churn_label_column_imported_without_label_col_is_flagged_in_a_note() -> None:
    # A monthly profile refresh imported without --label-col: "Churn" becomes an attribute, so a model feature that
    # gives the model its answer (and every customer still here reads "No"). The summary says so.
    csv = "customerID,Contract,Churn\nA1,Month-to-month,Yes\nA2,Two year,No\n"

    result = run_import("customers", csv)

    assert any("'Churn'" in note and "--label-col Churn" in note for note in result.notes), result.notes
    labelled = run_import("customers", csv, label_column="Churn", positive_label="Yes")
    assert not any("--label-col" in note for note in labelled.notes), labelled.notes
