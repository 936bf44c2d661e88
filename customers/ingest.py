"""Writes of imports: each batch of checked rows goes to the database in one transaction.

The machinery that reads and checks rows lives in ``customers.importers``; here each batch of
clean rows is written in one transaction, so an import stopped midway leaves whole batches only,
and the deterministic external ids make a rerun skip what was written and finish the rest.
Re-exported by ``customers.services``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import BinaryIO

from django.conf import settings
from django.db import DatabaseError, connection, models, transaction
from django.utils import timezone

from customers.importers import (
    FileKeys,
    ImportFileError,
    ImportOptions,
    ParsedRow,
    PreparedRow,
    PreparedRows,
    RecordStream,
    RowError,
    RowParser,
    assign_external_ids,
    open_records,
    storable_text,
)
from customers.models import (
    EVENT_COLUMNS,
    MESSAGE_COLUMNS,
    ORDER_COLUMNS,
    PROFILE_FIELDS,
    AuthorRole,
    Customer,
    CustomerProfileChange,
    Event,
    ImportRun,
    Message,
    MessageChannel,
    Order,
    OrderStatus,
)

__all__ = ["IMPORT_BATCH_SIZE", "ImportResult", "import_file", "import_options_from_settings"]

# The machinery that reads and checks rows lives in customers.importers; here each batch of clean
# rows is written in one transaction, so an import stopped midway leaves whole batches only, and
# the deterministic external ids make a rerun skip what was written and finish the rest.

# Rows per transaction. Larger batches mean fewer commits and, on SQLite, each index page that rows of any
# customer reach journalled once per batch rather than once per 5,000 rows (1.7x faster at 1M rows); three
# batches in flight (read, queued, written) hold about 40 MiB.
IMPORT_BATCH_SIZE = 20_000
IMPORT_STORED_ERRORS = 1000  # kept on the ImportRun and in the result; --report gets all of them
_CUSTOMER_CACHE_LIMIT = 200_000
_LOOKUP_CHUNK = 5000  # external ids per lookup query
_SQLITE_CACHE_KIB = 16 * 1024


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
        "currency": settings.CHURN_CURRENCY,
        "exchange_rates": settings.CHURN_EXCHANGE_RATES,
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
        if parser.converted:
            rates = options.exchange_rates
            converted = ", ".join(
                f"{count} from {code} at {rates[code]}" for code, count in sorted(parser.converted.items())
            )
            result.notes.append(f"orders converted to {options.currency} (CHURN_EXCHANGE_RATES): {converted}")
        if parser.label_rows and not parser.label_positive:
            seen = ", ".join(repr(value) for value in sorted(parser.label_values))
            result.notes.append(
                f"no row has {options.label_column} = {options.positive_label!r} (values seen: {seen}): every "
                "labelled customer was imported as not churned; check --positive"
            )
        for column in parser.label_like_columns():
            result.notes.append(
                f"column {column!r} looks like a churn label and was stored as a customer attribute, which a model "
                f"reads as a feature (the answer itself): import with --label-col {column} --positive VALUE, or "
                f"--drop-col {column}"
            )
    except ImportFileError as exc:
        result.status = ImportRun.Status.FAILED
        _import_run_save(run, result, extra_errors=[{"row": None, "field": "*", "reason": storable_text(str(exc))}])
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
        self.prepared = None
        if self.kind != "customers":
            _, columns, defaults = _ACTIVITY_TABLES[self.kind]
            self.prepared = PreparedRows(parser, columns=columns[2:], defaults=defaults, keys=self.keys)
        self.customer_ids: dict[str, int] = {}
        self.batches = 0
        self.lock = threading.Lock()
        self.direct = True  # see write_activity

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
            with contextlib.nullcontext() if pipeline else _write_session():  # the writer thread has its own
                batch: list[ParsedRow] | list[PreparedRow] = []
                parse = self.parser.parse if self.prepared is None else self.prepared.prepare
                for item in records.records:
                    self.result.rows_total += 1
                    if type(item) is RowError:
                        self.reject([item])
                        continue
                    parsed = parse(item[0], item[1], plan)  # type: ignore[index, arg-type]
                    if type(parsed) is list:
                        self.reject(parsed)
                        continue
                    batch.append(parsed)  # type: ignore[arg-type]
                    if len(batch) >= batch_size:
                        send(self.identify(batch))
                        batch = []
                if batch:
                    send(self.identify(batch))
        finally:
            if pipeline is not None:
                pipeline.close()

    def identify(self, batch: list[ParsedRow] | list[PreparedRow]) -> list[ParsedRow] | list[_ActivityRow]:
        """The rows of a batch with their external ids; orders, events and messages as ``_ActivityRow``."""
        if self.prepared is None:
            errors = assign_external_ids(kind=self.kind, rows=batch, keys=self.keys)  # type: ignore[arg-type]
        else:
            batch, errors = self.prepared.identify(batch)  # type: ignore[arg-type]
        for error in errors:
            self.reject([error])
        return batch

    def write(self, batch: list[ParsedRow] | list[_ActivityRow]) -> None:
        """Write one batch in one transaction, with the progress of the ImportRun."""
        with transaction.atomic():
            if self.kind == "customers":
                errors = self.write_customers(batch)  # type: ignore[arg-type]
            else:
                errors = self.write_activity(batch)  # type: ignore[arg-type]
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
        profile_changes: list[CustomerProfileChange] = []
        source = f"import run {self.run_record.pk}" if self.run_record.pk is not None else "import"
        for row in rows:
            customer = existing.get(row.external_id)
            if customer is None:
                creates.append(Customer(external_id=row.external_id, attributes=row.extra or {}, **row.values))
                continue
            before = {name: getattr(customer, name) for name in PROFILE_FIELDS}
            changed: list[str] = []
            for name, value in row.values.items():
                if name == "opted_out_at" and customer.opted_out_at is not None:
                    # An opt-out always wins and its first time is kept (customers.services.customer_opt_out).
                    value = customer.opted_out_at if value is None else min(customer.opted_out_at, value)
                if getattr(customer, name) != value:
                    setattr(customer, name, value)
                    changed.append(name)
            if row.extra:
                merged = {**(customer.attributes if isinstance(customer.attributes, dict) else {}), **row.extra}
                if merged != customer.attributes:
                    customer.attributes = merged
                    changed.append("attributes")
            previous = {name: before[name] for name in PROFILE_FIELDS if name in changed}
            if customer.is_minimal:
                # A placeholder made for activity that came first: the imported profile is its first, not a change.
                customer.is_minimal = False
                changed.append("is_minimal")
            elif previous:
                profile_changes.append(
                    CustomerProfileChange(customer=customer, changed_at=now, previous=previous, source=source)
                )
            if changed:
                customer.updated_at = now
                updates.append(customer)
                update_fields.update(changed, ["updated_at"])
            else:
                self.result.rows_unchanged += 1
        Customer.objects.bulk_create(creates, batch_size=500)
        if updates:
            Customer.objects.bulk_update(updates, sorted(update_fields), batch_size=500)
        CustomerProfileChange.objects.bulk_create(profile_changes, batch_size=500)
        self.result.rows_imported += len(creates) + len(updates)
        return []

    def resolve_customers(self, external_ids: set[str]) -> dict[str, int]:
        cache = self.customer_ids
        resolved = {external_id: cache[external_id] for external_id in external_ids if external_id in cache}
        wanted = [external_id for external_id in external_ids if external_id not in resolved]
        if wanted:
            found = _values_by_external_id(Customer.objects, wanted, "id")
            missing = [external_id for external_id in wanted if external_id not in found]
            if missing:
                self.result.customers_created += _insert_ignoring_conflicts(
                    model=Customer, columns=_MINIMAL_CUSTOMER_COLUMNS, rows=_minimal_customer_rows(missing)
                )
                found.update(_values_by_external_id(Customer.objects, missing, "id"))
            resolved.update(found)
            if len(cache) + len(found) > _CUSTOMER_CACHE_LIMIT:
                cache.clear()  # bounded memory on files with millions of customers
            cache.update(found)
        return resolved

    # orders, events, messages: insert-only; the external id decides whether a row is new
    def write_activity(self, rows: list[_ActivityRow]) -> list[RowError]:
        model, columns, _ = _ACTIVITY_TABLES[self.kind]
        customer_ids = self.resolve_customers({row[2] for row in rows})
        errors: list[RowError] = []
        explicit = [row for row in rows if not row[1].startswith("auto-")]
        if explicit:
            rows, errors = self.skip_existing(model, columns, rows, explicit)
        table_rows = [(row[1], customer_ids[row[2]], *row[3:]) for row in rows]
        table_rows.sort(key=_first)  # neighbouring keys: fewer index pages touched
        inserted = _insert_ignoring_conflicts(model=model, columns=columns, rows=table_rows, direct=self.direct)
        # COPY straight into the table while no row of the file is found stored already (a first import);
        # after a clash, rows go through a scratch table that skips the stored ones, until a batch is all new.
        self.direct = inserted == len(table_rows)
        self.result.rows_imported += inserted
        self.result.rows_unchanged += len(table_rows) - inserted
        return errors

    def skip_existing(
        self,
        model: type[models.Model],
        columns: tuple[str, ...],
        rows: list[_ActivityRow],
        explicit: list[_ActivityRow],
    ) -> tuple[list[_ActivityRow], list[RowError]]:
        """Rows whose explicit id is already stored: unchanged when identical, rejected when different."""
        compared = columns[2:]
        stored = _values_by_external_id(model.objects, [row[1] for row in explicit], "customer__external_id", *compared)
        if not stored:
            return rows, []
        errors: list[RowError] = []
        keep: list[_ActivityRow] = []
        for row in rows:
            existing = stored.get(row[1])
            if existing is None:
                keep.append(row)
                continue
            incoming = row[2:]
            if incoming == existing:
                self.result.rows_unchanged += 1
            else:
                differing = [
                    name
                    for name, new, old in zip(("customer_id", *compared), incoming, existing, strict=True)
                    if new != old
                ]
                errors.append(
                    RowError(
                        row[0],  # type: ignore[arg-type]
                        "external_id",
                        f"{row[1]!r} is already stored with a different {', '.join(differing)}; "
                        f"an import never overwrites {self.kind}",
                    )
                )
        return keep, errors


@contextlib.contextmanager
def _write_session() -> Iterator[None]:
    """Settings of the connection for the writes of one import, put back afterwards.

    SQLite: a page cache of ``_SQLITE_CACHE_KIB`` instead of the default 2 MB, so that the pages of
    the (customer, time) index, which rows of any customer reach at random, stay in memory across
    batches. Nothing that touches durability (journal, synchronous) is changed.
    """
    if connection.vendor != "sqlite":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA cache_size")
        (previous,) = cursor.fetchone()
        cursor.execute(f"PRAGMA cache_size = -{int(_SQLITE_CACHE_KIB)}")
    try:
        yield
    finally:
        try:
            with connection.cursor() as cursor:
                cursor.execute(f"PRAGMA cache_size = {int(previous)}")
        except DatabaseError:
            pass  # the connection broke with the import's error, which is the one to report


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
            with _write_session():
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


# An order, event or message ready to write: (row number, external id, customer external id, then the values of
# its table's columns after external_id and customer_id, in _ACTIVITY_TABLES order, defaults filled in).
_ActivityRow = tuple[object, ...]

_ACTIVITY_TABLES: dict[str, tuple[type[models.Model], tuple[str, ...], dict[str, object]]] = {
    "orders": (
        Order,
        ("external_id", "customer_id", *ORDER_COLUMNS),
        {
            "currency": "USD",
            "item_count": 1,
            "status": OrderStatus.COMPLETED.value,
            "discount_amount": Decimal("0.00"),
            "status_changed_at": None,
        },
    ),
    "events": (Event, ("external_id", "customer_id", *EVENT_COLUMNS), {}),
    "messages": (
        Message,
        ("external_id", "customer_id", *MESSAGE_COLUMNS),
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


def _first(row: tuple[object, ...]) -> object:
    return row[0]


def _values_by_external_id(queryset: models.QuerySet, external_ids: list[str], *fields: str) -> dict[str, object]:
    """``{external_id: value}`` of one field (or a tuple of several) for the stored rows among ``external_ids``.

    Asks in chunks, within the backend's limit on query parameters.
    """
    chunk = connection.features.max_query_params or _LOOKUP_CHUNK
    chunk = min(chunk - 1, _LOOKUP_CHUNK)
    found: dict[str, object] = {}
    for start in range(0, len(external_ids), chunk):
        rows = queryset.filter(external_id__in=external_ids[start : start + chunk]).values_list("external_id", *fields)
        if len(fields) == 1:
            found.update(rows)
        else:
            found.update((row[0], row[1:]) for row in rows)
    return found


def _insert_ignoring_conflicts(
    *, model: type[models.Model], columns: tuple[str, ...], rows: list[tuple[object, ...]], direct: bool = False
) -> int:
    """Insert rows, skipping those whose external id exists; returns how many were inserted.

    PostgreSQL: with ``direct``, one COPY into the table itself, in a savepoint; if an external id is
    stored already (the COPY stops at the first clash) or without ``direct``: COPY into a temporary
    table, then INSERT ... SELECT ... ON CONFLICT DO NOTHING. SQLite: one executemany of INSERT ... ON
    CONFLICT DO NOTHING. Values are the field values of ``columns``, JSON fields as Python objects.
    """
    if not rows:
        return 0
    meta = model._meta
    quote = connection.ops.quote_name
    table = quote(meta.db_table)
    column_list = ", ".join(quote(column) for column in columns)
    fields = [meta.get_field(column) for column in columns]
    json_positions = [i for i, f in enumerate(fields) if isinstance(f, models.JSONField)]
    if connection.vendor == "postgresql":
        from psycopg.errors import UniqueViolation

        db_types = [f.db_type(connection) for f in fields]
        # binary COPY: no text to format here nor to parse in the server; psycopg dumps each value as its column's type
        copy_types = [db_type.split("(")[0] for db_type in db_types]  # type: ignore[union-attr]
        with connection.cursor() as cursor:
            if direct:
                try:
                    with transaction.atomic():  # a savepoint: a clash undoes this COPY only
                        _copy(cursor, table, column_list, rows, copy_types)
                    return len(rows)
                except UniqueViolation:
                    pass
            scratch = quote(f"churn_import_{meta.db_table}")
            definitions = ", ".join(
                f"{quote(column)} {db_type}" for column, db_type in zip(columns, db_types, strict=True)
            )
            cursor.execute(f"CREATE TEMPORARY TABLE IF NOT EXISTS {scratch} ({definitions}) ON COMMIT DELETE ROWS")
            _copy(cursor, scratch, column_list, rows, copy_types)
            copy_back = f"INSERT INTO {table} ({column_list}) SELECT {column_list} FROM {scratch}"  # noqa: S608
            cursor.execute(f"{copy_back} ON CONFLICT ({quote('external_id')}) DO NOTHING")
            inserted = cursor.rowcount
            cursor.execute(f"TRUNCATE {scratch}")
            return inserted
    # SQLite gets what Django's adapters would make of the values: text for datetimes (naive UTC) and decimals.
    converters = [(i, _json_text) for i in json_positions]
    for i, f in enumerate(fields):
        if isinstance(f, models.DateTimeField):
            converters.append((i, _sqlite_datetime))
        elif isinstance(f, models.DecimalField):
            converters.append((i, _sqlite_decimal))
    if converters:
        rows = [_converted(row, converters) for row in rows]
    placeholders = ", ".join(["%s"] * len(columns))
    # Identifiers come from model metadata, values are parameters.
    insert = f"INSERT INTO {table} ({column_list}) VALUES ({placeholders})"  # noqa: S608
    with connection.cursor() as cursor:
        cursor.executemany(f"{insert} ON CONFLICT ({quote('external_id')}) DO NOTHING", rows)
        return cursor.rowcount


def _copy(cursor: object, table: str, column_list: str, rows: list[tuple[object, ...]], types: list[str]) -> None:
    with cursor.copy(f"COPY {table} ({column_list}) FROM STDIN (FORMAT BINARY)") as copy:  # type: ignore[attr-defined]
        copy.set_types(types)
        write_row = copy.write_row
        for row in rows:
            write_row(row)


def _converted(row: tuple[object, ...], converters: list[tuple[int, Callable[[object], object]]]) -> tuple[object, ...]:
    values = list(row)
    for i, convert in converters:
        values[i] = convert(values[i])
    return tuple(values)


def _json_text(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


def _sqlite_datetime(value: object) -> object:
    if not isinstance(value, datetime):
        return value
    if value.tzinfo is UTC:
        return value.isoformat(" ")[:-6]  # without its "+00:00": naive UTC, as Django stores it
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return str(value)


def _sqlite_decimal(value: object) -> object:
    return str(value) if isinstance(value, Decimal) else value
