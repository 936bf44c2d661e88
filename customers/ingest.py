"""Writes of imports: each batch of checked rows goes to the database in one transaction.

The machinery that reads and checks rows lives in ``customers.importers``; here each batch of
clean rows is written in one transaction, so an import stopped midway leaves whole batches only,
and the deterministic external ids make a rerun skip what was written and finish the rest.
Re-exported by ``customers.services``.
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, timedelta
from decimal import Decimal
from typing import BinaryIO

from django.conf import settings
from django.db import connection, models, transaction
from django.utils import timezone

from customers.importers import (
    FileKeys,
    ImportFileError,
    ImportOptions,
    ParsedRow,
    RecordStream,
    RowError,
    RowParser,
    assign_external_ids,
    open_records,
)
from customers.models import AuthorRole, Customer, Event, ImportRun, Message, MessageChannel, Order, OrderStatus

__all__ = ["IMPORT_BATCH_SIZE", "ImportResult", "import_file", "import_options_from_settings"]

# The machinery that reads and checks rows lives in customers.importers; here each batch of clean
# rows is written in one transaction, so an import stopped midway leaves whole batches only, and
# the deterministic external ids make a rerun skip what was written and finish the rest.

IMPORT_BATCH_SIZE = 5000
IMPORT_STORED_ERRORS = 1000  # kept on the ImportRun and in the result; --report gets all of them
_CUSTOMER_CACHE_LIMIT = 200_000


@dataclass
class ImportResult:
    """What one import did. ``errors`` holds the first ``IMPORT_STORED_ERRORS`` row errors."""

    import_run_id: int
    kind: str
    source: str
    dry_run: bool
    status: str = ImportRun.Status.RUNNING
    rows_total: int = 0
    rows_imported: int = 0
    rows_unchanged: int = 0
    rows_rejected: int = 0
    customers_created: int = 0
    errors: list[RowError] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        return {
            "import_run_id": self.import_run_id,
            "kind": self.kind,
            "source": self.source,
            "dry_run": self.dry_run,
            "status": self.status,
            "rows_total": self.rows_total,
            "rows_imported": self.rows_imported,
            "rows_unchanged": self.rows_unchanged,
            "rows_rejected": self.rows_rejected,
            "customers_created": self.customers_created,
            "notes": list(self.notes),
        }

    def as_dict(self) -> dict[str, object]:
        return {**self.summary(), "errors": [error.as_dict() for error in self.errors]}


def import_options_from_settings(**overrides: object) -> ImportOptions:
    """``ImportOptions`` with the time zone, text limit and future tolerance taken from settings."""
    defaults: dict[str, object] = {
        "time_zone": settings.CHURN_IMPORT_TIME_ZONE,
        "max_text_chars": settings.CHURN_IMPORT_MAX_TEXT_CHARS,
        "future_tolerance": timedelta(seconds=settings.CHURN_IMPORT_FUTURE_TOLERANCE_SECONDS),
    }
    defaults.update({key: value for key, value in overrides.items() if value is not None})
    return ImportOptions(**defaults)  # type: ignore[arg-type]


def _stream_sha256(stream: BinaryIO) -> str:
    digest = hashlib.sha256()
    stream.seek(0)
    for chunk in iter(lambda: stream.read(1024 * 1024), b""):
        digest.update(chunk)
    stream.seek(0)
    return digest.hexdigest()


def import_file(
    *,
    stream: BinaryIO,
    source: str,
    options: ImportOptions,
    dry_run: bool = False,
    started_by: str = "",
    batch_size: int = IMPORT_BATCH_SIZE,
    error_sink: Callable[[RowError], None] | None = None,
    after_batch: Callable[[int], None] | None = None,
) -> ImportResult:
    """Import the rows of a seekable binary ``stream`` as ``options.kind`` and record an ``ImportRun``.

    Good rows are written in batches of ``batch_size``, each in its own transaction; bad rows are
    collected as ``RowError`` (passed to ``error_sink`` as they occur) and never written. Orders,
    events and messages for unknown customers create minimal customers. A dry run writes nothing
    but the ``ImportRun``. ``after_batch(n)`` runs after batch ``n`` (from 1) is committed.

    Raises:
        ImportFileError: the file cannot be read at all; the ImportRun is marked failed.
    """
    run = ImportRun.objects.create(
        kind=options.kind,
        source=source[:1024],
        source_sha256=_stream_sha256(stream),
        dry_run=dry_run,
        started_by=started_by[:255],
    )
    result = ImportResult(import_run_id=run.pk, kind=options.kind, source=source, dry_run=dry_run)
    try:
        parser = RowParser(options)
        records = open_records(stream, options=options, name=source)
        result.notes = records.notes
        plan = parser.check_columns(records.columns) if records.columns is not None else None
        importer = _BatchImporter(
            run=run, result=result, parser=parser, error_sink=error_sink, after_batch=after_batch, dry_run=dry_run
        )
        if dry_run:
            with transaction.atomic():
                importer.run(records, batch_size=batch_size, plan=plan)
                transaction.set_rollback(True)
        else:
            importer.run(records, batch_size=batch_size, plan=plan)
        if parser.ignored_columns:
            result.notes.append(f"columns not imported: {', '.join(sorted(parser.ignored_columns))}")
    except ImportFileError as exc:
        result.status = ImportRun.Status.FAILED
        _import_run_save(run, result, extra_errors=[{"row": None, "field": "*", "reason": str(exc)}])
        raise
    except BaseException:
        result.status = ImportRun.Status.FAILED
        _import_run_save(run, result)
        raise
    result.status = ImportRun.Status.COMPLETED_WITH_ERRORS if result.rows_rejected else ImportRun.Status.COMPLETED
    _import_run_save(run, result)
    return result


def _import_run_save(run: ImportRun, result: ImportResult, *, extra_errors: list[dict] | None = None) -> None:
    finished = result.status != ImportRun.Status.RUNNING
    ImportRun.objects.filter(pk=run.pk).update(
        status=result.status,
        rows_total=result.rows_total,
        rows_imported=result.rows_imported,
        rows_unchanged=result.rows_unchanged,
        rows_rejected=result.rows_rejected,
        customers_created=result.customers_created,
        errors=(extra_errors or []) + [error.as_dict() for error in result.errors],
        finished_at=timezone.now() if finished else None,
    )


class _BatchImporter:
    def __init__(
        self,
        *,
        run: ImportRun,
        result: ImportResult,
        parser: RowParser,
        error_sink: Callable[[RowError], None] | None,
        after_batch: Callable[[int], None] | None,
        dry_run: bool,
    ) -> None:
        self.run_record = run
        self.result = result
        self.parser = parser
        self.kind = parser.kind
        self.error_sink = error_sink
        self.after_batch = after_batch
        self.dry_run = dry_run
        self.keys = FileKeys()
        self.customer_ids: dict[str, int] = {}
        self.batches = 0
        self.lock = threading.Lock()

    def reject(self, errors: list[RowError]) -> None:
        """One rejected row (all its errors). Called from the reading and the writing thread."""
        with self.lock:
            self.result.rows_rejected += 1
            for error in errors:
                if len(self.result.errors) < IMPORT_STORED_ERRORS:
                    self.result.errors.append(error)
                if self.error_sink is not None:
                    self.error_sink(error)

    def run(self, records: RecordStream, *, batch_size: int, plan: object = None) -> None:
        # Inside a caller's transaction (a dry run, a test) there is one connection: write inline.
        # Otherwise a second thread writes batch n while this one parses batch n+1; the database
        # works with the GIL released, so the two overlap on a second core.
        pipeline = None if connection.in_atomic_block else _WriterThread(self.write)
        send = self.write if pipeline is None else pipeline.put
        try:
            batch: list[ParsedRow] = []
            parse = self.parser.parse
            for item in records.records:
                self.result.rows_total += 1
                if isinstance(item, RowError):
                    self.reject([item])
                    continue
                parsed = parse(item[0], item[1], plan)  # type: ignore[arg-type]
                if isinstance(parsed, list):
                    self.reject(parsed)
                    continue
                batch.append(parsed)
                if len(batch) >= batch_size:
                    self.identify(batch)
                    send(batch)
                    batch = []
            if batch:
                self.identify(batch)
                send(batch)
        finally:
            if pipeline is not None:
                pipeline.close()

    def identify(self, batch: list[ParsedRow]) -> None:
        for error in assign_external_ids(kind=self.kind, rows=batch, keys=self.keys):
            self.reject([error])

    def write(self, batch: list[ParsedRow]) -> None:
        """Write one batch in one transaction, with the progress of the ImportRun."""
        with transaction.atomic():
            if self.kind == "customers":
                errors = self.write_customers(batch)
            else:
                errors = self.write_activity(batch)
            for error in errors:
                self.reject([error])
            if not self.dry_run:
                _import_run_save(self.run_record, self.result)
        self.batches += 1
        if self.after_batch is not None:
            self.after_batch(self.batches)

    # customers: upsert by external id; only the columns the file has are compared and written
    def write_customers(self, rows: list[ParsedRow]) -> list[RowError]:
        existing = {
            customer.external_id: customer
            for customer in Customer.objects.filter(external_id__in=[row.external_id for row in rows])
        }
        now = timezone.now()
        creates: list[Customer] = []
        updates: list[Customer] = []
        update_fields: set[str] = set()
        for row in rows:
            customer = existing.get(row.external_id)
            if customer is None:
                creates.append(Customer(external_id=row.external_id, attributes=row.extra or {}, **row.values))
                continue
            changed: list[str] = []
            for name, value in row.values.items():
                if getattr(customer, name) != value:
                    setattr(customer, name, value)
                    changed.append(name)
            if row.extra:
                merged = {**(customer.attributes if isinstance(customer.attributes, dict) else {}), **row.extra}
                if merged != customer.attributes:
                    customer.attributes = merged
                    changed.append("attributes")
            if customer.is_minimal:
                customer.is_minimal = False
                changed.append("is_minimal")
            if changed:
                customer.updated_at = now
                updates.append(customer)
                update_fields.update(changed, ["updated_at"])
            else:
                self.result.rows_unchanged += 1
        Customer.objects.bulk_create(creates, batch_size=500)
        if updates:
            Customer.objects.bulk_update(updates, sorted(update_fields), batch_size=500)
        self.result.rows_imported += len(creates) + len(updates)
        return []

    def resolve_customers(self, external_ids: set[str]) -> dict[str, int]:
        cache = self.customer_ids
        resolved = {external_id: cache[external_id] for external_id in external_ids if external_id in cache}
        wanted = [external_id for external_id in external_ids if external_id not in resolved]
        if wanted:
            found = dict(Customer.objects.filter(external_id__in=wanted).values_list("external_id", "id"))
            missing = [external_id for external_id in wanted if external_id not in found]
            if missing:
                self.result.customers_created += _insert_ignoring_conflicts(
                    model=Customer, columns=_MINIMAL_CUSTOMER_COLUMNS, rows=_minimal_customer_rows(missing)
                )
                found.update(Customer.objects.filter(external_id__in=missing).values_list("external_id", "id"))
            resolved.update(found)
            if len(cache) + len(found) > _CUSTOMER_CACHE_LIMIT:
                cache.clear()  # bounded memory on files with millions of customers
            cache.update(found)
        return resolved

    # orders, events, messages: insert-only; the external id decides whether a row is new
    def write_activity(self, rows: list[ParsedRow]) -> list[RowError]:
        model, columns, defaults = _ACTIVITY_TABLES[self.kind]
        customer_ids = self.resolve_customers({row.customer_external_id for row in rows})
        errors: list[RowError] = []
        explicit = [row for row in rows if not row.external_id.startswith("auto-")]
        if explicit:
            rows, errors = self.skip_existing(model, columns, defaults, rows, explicit)
        value_columns = columns[2:]
        extra_column = "properties" if self.kind == "events" else None
        table_rows = []
        for row in rows:
            values = row.values
            table_row: list[object] = [row.external_id, customer_ids[row.customer_external_id]]
            for name in value_columns:
                if name == extra_column:
                    table_row.append(row.extra or {})
                else:
                    table_row.append(values.get(name, defaults.get(name)))
            table_rows.append(table_row)
        table_rows.sort(key=lambda table_row: table_row[0])  # neighbouring keys: fewer index pages touched
        inserted = _insert_ignoring_conflicts(model=model, columns=columns, rows=table_rows)
        self.result.rows_imported += inserted
        self.result.rows_unchanged += len(table_rows) - inserted
        return errors

    def skip_existing(
        self,
        model: type[models.Model],
        columns: tuple[str, ...],
        defaults: dict[str, object],
        rows: list[ParsedRow],
        explicit: list[ParsedRow],
    ) -> tuple[list[ParsedRow], list[RowError]]:
        """Rows whose explicit id is already stored: unchanged when identical, rejected when different."""
        compared = [name for name in columns[2:]]
        stored = {
            values[0]: values[1:]
            for values in model.objects.filter(external_id__in=[row.external_id for row in explicit]).values_list(
                "external_id", "customer__external_id", *compared
            )
        }
        if not stored:
            return rows, []
        errors: list[RowError] = []
        keep: list[ParsedRow] = []
        for row in rows:
            existing = stored.get(row.external_id)
            if existing is None:
                keep.append(row)
                continue
            incoming = (row.customer_external_id,) + tuple(
                (row.extra or {}) if name == "properties" else row.values.get(name, defaults.get(name))
                for name in compared
            )
            if incoming == tuple(existing):
                self.result.rows_unchanged += 1
            else:
                differing = [
                    name
                    for name, new, old in zip(("customer_id", *compared), incoming, existing, strict=True)
                    if new != old
                ]
                errors.append(
                    RowError(
                        row.row,
                        "external_id",
                        f"{row.external_id!r} is already stored with a different {', '.join(differing)}; "
                        f"an import never overwrites {self.kind}",
                    )
                )
        return keep, errors


class _WriterThread:
    """Runs ``write(batch)`` on its own thread, with its own database connection, one batch ahead at most.

    The first error stops the writing; it is raised in the caller at its next ``put`` or at ``close``.
    """

    def __init__(self, write: Callable[[list[ParsedRow]], None]) -> None:
        self.write = write
        self.queue: queue.Queue[list[ParsedRow] | None] = queue.Queue(maxsize=1)
        self.error: BaseException | None = None
        self.failed = False
        self.thread = threading.Thread(target=self._work, name="churn-import-writer", daemon=True)
        self.thread.start()

    def _work(self) -> None:
        try:
            while (batch := self.queue.get()) is not None:
                if not self.failed:
                    try:
                        self.write(batch)
                    except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                        self.error, self.failed = exc, True
        finally:
            connection.close()  # this thread's connection

    def put(self, batch: list[ParsedRow]) -> None:
        if self.failed:
            self._raise()
        self.queue.put(batch)

    def _raise(self) -> None:
        error, self.error = self.error, None
        if error is not None:
            raise error
        raise RuntimeError("the import writer stopped after an error")

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            self._raise()


_ACTIVITY_TABLES: dict[str, tuple[type[models.Model], tuple[str, ...], dict[str, object]]] = {
    "orders": (
        Order,
        ("external_id", "customer_id", "placed_at", "amount", "currency", "item_count", "status", "discount_amount"),
        {"currency": "USD", "item_count": 1, "status": OrderStatus.COMPLETED.value, "discount_amount": Decimal("0.00")},
    ),
    "events": (Event, ("external_id", "customer_id", "kind", "occurred_at", "properties"), {}),
    "messages": (
        Message,
        ("external_id", "customer_id", "conversation_id", "channel", "author_role", "sent_at", "text"),
        {"channel": MessageChannel.CHAT.value, "author_role": AuthorRole.CUSTOMER.value},
    ),
}


_MINIMAL_CUSTOMER_COLUMNS = tuple(field.attname for field in Customer._meta.concrete_fields if not field.primary_key)


def _minimal_customer_rows(external_ids: list[str]) -> list[list[object]]:
    """Table rows for customers known only by their id; every other column takes the model default."""
    now = timezone.now()
    template = {field.attname: field.get_default() for field in Customer._meta.concrete_fields}
    template.update(is_minimal=True, created_at=now, updated_at=now)
    rows = []
    for external_id in sorted(external_ids):
        template["external_id"] = external_id
        rows.append([template[column] for column in _MINIMAL_CUSTOMER_COLUMNS])
    return rows


def _insert_ignoring_conflicts(*, model: type[models.Model], columns: tuple[str, ...], rows: list[list[object]]) -> int:
    """Insert rows, skipping those whose external id exists; returns how many were inserted.

    PostgreSQL: COPY into a temporary table, then INSERT ... SELECT ... ON CONFLICT DO NOTHING.
    SQLite: one executemany of INSERT ... ON CONFLICT DO NOTHING.
    """
    if not rows:
        return 0
    meta = model._meta
    quote = connection.ops.quote_name
    table = quote(meta.db_table)
    column_list = ", ".join(quote(column) for column in columns)
    fields = [meta.get_field(column) for column in columns]
    json_positions = [i for i, f in enumerate(fields) if isinstance(f, models.JSONField)]
    for row in rows:
        for i in json_positions:
            row[i] = json.dumps(row[i], ensure_ascii=False)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            scratch = quote(f"churn_import_{meta.db_table}")
            definitions = ", ".join(
                f"{quote(column)} {f.db_type(connection)}" for column, f in zip(columns, fields, strict=True)
            )
            cursor.execute(f"CREATE TEMPORARY TABLE IF NOT EXISTS {scratch} ({definitions}) ON COMMIT DELETE ROWS")
            with cursor.copy(f"COPY {scratch} ({column_list}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            copy_back = f"INSERT INTO {table} ({column_list}) SELECT {column_list} FROM {scratch}"  # noqa: S608
            cursor.execute(f"{copy_back} ON CONFLICT ({quote('external_id')}) DO NOTHING")
            inserted = cursor.rowcount
            cursor.execute(f"TRUNCATE {scratch}")
            return inserted
        datetime_positions = [i for i, f in enumerate(fields) if isinstance(f, models.DateTimeField)]
        for row in rows:
            for i in datetime_positions:
                if row[i] is not None:
                    row[i] = str(row[i].astimezone(UTC).replace(tzinfo=None))
        placeholders = ", ".join(["%s"] * len(columns))
        # Identifiers come from model metadata, values are parameters.
        insert = f"INSERT INTO {table} ({column_list}) VALUES ({placeholders})"  # noqa: S608
        cursor.executemany(f"{insert} ON CONFLICT ({quote('external_id')}) DO NOTHING", rows)
        return cursor.rowcount
