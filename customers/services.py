"""Writes of the customers app."""

from __future__ import annotations

import contextlib
import csv
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import attrgetter
from pathlib import Path

from django.db import connection, transaction
from django.db.models import Model, ProtectedError, QuerySet, RestrictedError
from django.utils import timezone

from customers.generator import ID_PREFIX, CustomerTruth, StoreOptions, default_end, simulate_store
from customers.models import (
    EVENT_COLUMNS,
    MESSAGE_COLUMNS,
    ORDER_COLUMNS,
    PROFILE_FIELDS,
    Customer,
    CustomerProfileChange,
    Event,
    Message,
    Order,
)
from customers.selectors import demo_customers


def customers_erase(*, customers: QuerySet[Customer], actor: str) -> dict[str, int]:
    """Delete customers with every row about them (the right to erasure): their profile history, orders, events,
    messages, churn scores, alerts and retention actions, and the stored responses of keyed requests about them
    (Idempotency-Key replays), in one transaction. Returns the rows deleted per model.

    The append-only audit log keeps its entries (their links to the erased alerts and actions become empty; email
    addresses in them were masked when written) and gets one more, naming the erased customers by id only. A coupon
    email still queued for an erased customer finds no action and sends nothing.
    """
    # alerts reads customers: imported here, not at module level
    from alerts.services import audit_record, idempotency_records_forget_customers

    ids = list(customers.order_by("pk").values_list("pk", flat=True).distinct())
    if not ids:
        return {}
    with transaction.atomic():
        # Locked in id order first, as the dispatches and coupons lock customers.
        list(Customer.objects.select_for_update().filter(pk__in=ids).order_by("pk").values_list("pk", flat=True))
        _, deleted = Customer.objects.filter(pk__in=ids).delete()
        rows = {label: count for label, count in sorted(deleted.items()) if count}
        # The stored responses of keyed requests about them (kept for replays) hold their data too.
        if forgotten := idempotency_records_forget_customers(customer_ids=ids):
            rows["alerts.IdempotencyRecord"] = forgotten
        audit_record(actor=actor, action="customers_erased", details={"customer_ids": ids, "rows_deleted": rows})
    return rows


@transaction.atomic
def customer_opt_out(*, customer: Customer, at: datetime | None = None) -> Customer:
    """Record that the customer opted out of marketing. An opt-out always wins over consent.

    Idempotent: the first opt-out time is kept, so a repeated opt-out does not move it.
    """
    locked = Customer.objects.select_for_update().get(pk=customer.pk)
    if locked.opted_out_at is None:
        locked.opted_out_at = at or timezone.now()
        locked.save(update_fields=["opted_out_at", "updated_at"])
    customer.opted_out_at = locked.opted_out_at
    return locked


# Customers opted out together by the admin's bulk action: one UPDATE per chunk.
OPT_OUT_CHUNK_SIZE = 1000


def customers_opt_out(*, customers: QuerySet[Customer], at: datetime | None = None) -> int:
    """``customer_opt_out`` for every customer of ``customers`` (the admin's bulk action, "select all" included):
    the number newly opted out. The first opt-out time is kept, as one at a time (the ``UPDATE`` only touches rows
    without one, and PostgreSQL checks that again on a row another transaction changed meanwhile). Per chunk of
    ``OPT_OUT_CHUNK_SIZE`` customers one read of their ids, one locking read in id order and one ``UPDATE``,
    whatever the selection's size."""
    at = at or timezone.now()
    ids = customers.order_by("pk").values_list("pk", flat=True).distinct()
    changed, last = 0, 0
    while chunk := list(ids.filter(pk__gt=last)[:OPT_OUT_CHUNK_SIZE]):
        with transaction.atomic():
            # Locked in id order first, as the dispatches and coupons lock customers: an UPDATE alone locks its rows
            # in the order of its scan, which could deadlock against a rule application locking the same customers.
            pending = list(
                Customer.objects.select_for_update()
                .filter(pk__in=chunk, opted_out_at__isnull=True)
                .order_by("pk")
                .values_list("pk", flat=True)
            )
            if pending:
                changed += Customer.objects.filter(pk__in=pending, opted_out_at__isnull=True).update(
                    opted_out_at=at, updated_at=timezone.now()
                )
        last = chunk[-1]
    return changed


@transaction.atomic
def customer_save(*, customer: Customer, source: str, at: datetime | None = None) -> Customer:
    """Save a customer edited by hand (the admin). A change of a profile field (segment, country, language,
    attributes) is recorded with the values before it (:class:`CustomerProfileChange`), so that snapshots at earlier
    cutoffs keep reading the old values; a placeholder customer's first profile is not a change."""
    stored = None
    if customer.pk is not None:
        stored = Customer.objects.select_for_update().filter(pk=customer.pk).values(*PROFILE_FIELDS, "is_minimal")
        stored = stored.first()
    customer.save()
    if stored is not None and not stored["is_minimal"]:
        previous = {name: stored[name] for name in PROFILE_FIELDS if getattr(customer, name) != stored[name]}
        if previous:
            CustomerProfileChange.objects.create(
                customer=customer, changed_at=at or timezone.now(), previous=previous, source=source
            )
    return customer


# --- Demo data ---------------------------------------------------------------------------------


class DemoDataExistsError(ValueError):
    """Demo customers are already stored and replacing them was not asked for."""


@dataclass(frozen=True)
class GenerationSummary:
    customers: int
    orders: int
    events: int
    messages: int
    start: datetime
    end: datetime
    seed: int
    replaced_customers: int = 0


_DEMO_BATCH_SIZE = 2000


@transaction.atomic
def demo_store_generate(
    *,
    customers: int,
    days: int,
    seed: int,
    languages: Sequence[str] = ("en",),
    end: datetime | None = None,
    replace: bool = False,
    truth_path: Path | None = None,
    incident_churn: bool = False,
) -> GenerationSummary:
    """Simulate a demo store (see ``customers.generator``) and store it in one transaction.

    Demo rows carry external ids starting with ``demo-``. If some are stored already this raises
    ``DemoDataExistsError``, unless ``replace`` is set: then they (and everything attached to them)
    are deleted first, in the same transaction. The hidden propensities are never stored in the
    database; with ``truth_path`` they go to a CSV file for debugging, written after the data.
    ``incident_churn`` adds the abrupt, incident-driven churners (``StoreOptions.incident_churn``).
    """
    options = StoreOptions(
        customers=customers,
        days=days,
        seed=seed,
        end=end or default_end(),
        languages=tuple(languages),
        incident_churn=incident_churn,
    )
    existing = demo_customers()
    replaced = 0
    opted_out: dict[str, datetime] = {}  # by external id and by address
    if existing.exists():
        if not replace:
            raise DemoDataExistsError(
                f"{existing.count()} demo customers (external ids starting with {ID_PREFIX!r}) are already stored; "
                "pass replace=True (--replace) to delete them and generate again"
            )
        replaced = existing.count()
        # Opt-outs outlive the replacement: the regenerated store reuses the same ids and addresses, which would
        # otherwise be emailed again (an opt-out is the customer's word, not demo data).
        for external_id, email, opted_out_at in existing.filter(opted_out_at__isnull=False).values_list(
            "external_id", "email", "opted_out_at"
        ):
            opted_out[external_id] = opted_out_at
            if email:
                opted_out[email.casefold()] = opted_out_at
        try:
            for model in (Event, Message, Order):
                model.objects.filter(customer__external_id__startswith=ID_PREFIX).delete()
            existing.delete()
        except (ProtectedError, RestrictedError) as error:
            kinds = sorted({obj._meta.verbose_name_plural for obj in error.args[1]})
            raise DemoDataExistsError(
                f"cannot replace the demo customers: {', '.join(kinds)} that must be kept refer to them"
            ) from error

    counts = {"customers": 0, "orders": 0, "events": 0, "messages": 0}
    truths: list[CustomerTruth] = []
    for block in simulate_store(options):
        created = Customer.objects.bulk_create(
            [
                Customer(
                    external_id=record.external_id,
                    email=record.email,
                    name=record.name,
                    segment=record.segment,
                    country=record.country,
                    language=record.language,
                    signed_up_at=record.signed_up_at,
                    attributes=record.attributes,
                    marketing_consent=record.marketing_consent,
                    opted_out_at=opted_out.get(record.external_id)
                    or opted_out.get(record.email.casefold())
                    or record.opted_out_at,
                )
                for record in block.customers
            ],
            batch_size=_DEMO_BATCH_SIZE,
        )
        pk_of = {customer.external_id: customer.pk for customer in created}
        if any(pk is None for pk in pk_of.values()):  # a backend that does not return keys from bulk inserts
            pk_of = dict(
                Customer.objects.filter(external_id__in=list(pk_of)).values_list("external_id", "pk").iterator()
            )
        _insert_demo_records(Order, block.orders, pk_of)
        _insert_demo_records(Event, block.events, pk_of)
        _insert_demo_records(Message, block.messages, pk_of)
        counts["customers"] += len(block.customers)
        counts["orders"] += len(block.orders)
        counts["events"] += len(block.events)
        counts["messages"] += len(block.messages)
        if truth_path is not None:
            truths.extend(block.truths)

    if truth_path is not None:
        _write_demo_truth(truth_path, truths)
    return GenerationSummary(**counts, start=options.start, end=options.end, seed=seed, replaced_customers=replaced)


_DEMO_COLUMNS: dict[type[Model], tuple[str, ...]] = {
    Order: ("external_id", "customer", *ORDER_COLUMNS),
    Event: ("external_id", "customer", *EVENT_COLUMNS),
    Message: ("external_id", "customer", *MESSAGE_COLUMNS),
}


def _insert_demo_records(model: type[Model], records: Sequence[object], pk_of: dict[str, int]) -> None:
    """Plain INSERTs of simulator records, values converted by the model's own fields.

    Faster than ``bulk_create`` for the hundreds of thousands of events of a demo store (``bench/generate.py``):
    no model instances and no SQL compiler; ``COPY`` on PostgreSQL, ``executemany`` elsewhere (SQLite's
    driver loops in C).
    """
    fields = [model._meta.get_field(name) for name in _DEMO_COLUMNS[model]]
    quote = connection.ops.quote_name
    getters = [
        (lambda record: pk_of[record.customer_external_id]) if field.name == "customer" else attrgetter(field.name)
        for field in fields
    ]

    def values(record: object) -> list[object]:
        return [
            field.get_db_prep_save(getter(record), connection) for field, getter in zip(fields, getters, strict=True)
        ]

    # Names come from the model's metadata; every value is a query parameter.
    columns = ", ".join(quote(field.column) for field in fields)
    head = f"INSERT INTO {quote(model._meta.db_table)} ({columns}) VALUES "  # noqa: S608
    row = f"({', '.join(['%s'] * len(fields))})"
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            with cursor.cursor.copy(f"COPY {quote(model._meta.db_table)} ({columns}) FROM STDIN") as copy:
                for record in records:
                    copy.write_row(values(record))
            return
        for start in range(0, len(records), _DEMO_BATCH_SIZE):
            batch = records[start : start + _DEMO_BATCH_SIZE]
            cursor.executemany(head + row, [values(record) for record in batch])


def _write_demo_truth(path: Path, truths: list[CustomerTruth]) -> None:
    """The simulator's hidden variables, one row per customer, written atomically (temporary file + rename); on
    failure nothing is left behind, neither the file nor the temporary one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    try:
        with partial.open("w", newline="", encoding="utf-8") as stream:
            writer = csv.writer(stream)
            writer.writerow(["external_id", "propensity", "service_frustration", "price_sensitivity", "engagement",
                             "churn_at", "conversation_topics", "churn_cause"])  # fmt: skip
            for truth in truths:
                writer.writerow(
                    [
                        truth.external_id,
                        f"{truth.propensity:.4f}",
                        f"{truth.service_frustration:.4f}",
                        f"{truth.price_sensitivity:.4f}",
                        f"{truth.engagement:.4f}",
                        truth.churn_at.isoformat() if truth.churn_at else "",
                        ";".join(f"{at.isoformat()}={topic}" for at, topic in truth.conversation_topics),
                        truth.churn_cause,
                    ]
                )
        partial.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):  # never created, or its folder is not one: the original error tells
            partial.unlink()
        raise
