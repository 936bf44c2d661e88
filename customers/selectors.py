"""Reads of the customers app: querysets with their joins applied and the customer timeline."""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from itertools import islice
from typing import TYPE_CHECKING

from django.db.models import CASCADE, Count, DecimalField, IntegerField, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce
from django.utils.text import smart_split, unescape_string_literal

from customers.generator import ID_PREFIX
from customers.models import Customer, CustomerProfileChange, Event, Message, Order, OrderStatus

if TYPE_CHECKING:
    from alerts.models import Alert, Intervention
    from predictions.models import ChurnScore

__all__ = [
    "CustomerRiskProfile",
    "TimelineEntry",
    "customer_risk_profile",
    "customer_timeline",
    "customers_for_staff",
    "customers_search",
    "customers_with_order_stats",
    "demo_customers",
    "messages_search",
]


@dataclass(frozen=True)
class TimelineEntry:
    """One thing that happened to a customer: an order, a browsing event or a support message.

    ``summary`` and ``text`` are plain, unescaped strings; whoever renders them escapes them.
    """

    at: datetime
    kind: str  # "order", "event" or "message"
    object_id: int
    summary: str
    text: str = ""


def _order_entries(customer: Customer, limit: int) -> list[TimelineEntry]:
    orders = Order.objects.filter(customer=customer).order_by("-placed_at", "-id")[:limit]
    return [
        TimelineEntry(
            at=order.placed_at,
            kind="order",
            object_id=order.pk,
            summary=f"order {order.external_id}: {order.amount} {order.currency}, {order.item_count} item(s), "
            f"{order.status}" + (f", discount {order.discount_amount}" if order.discount_amount else ""),
        )
        for order in orders
    ]


def _event_entries(customer: Customer, limit: int) -> list[TimelineEntry]:
    events = Event.objects.filter(customer=customer).order_by("-occurred_at", "-id")[:limit]
    return [
        TimelineEntry(
            at=event.occurred_at,
            kind="event",
            object_id=event.pk,
            summary=event.kind,
            text=", ".join(f"{key}={value}" for key, value in sorted(event.properties.items()))
            if isinstance(event.properties, dict)
            else str(event.properties),
        )
        for event in events
    ]


def _message_entries(customer: Customer, limit: int) -> list[TimelineEntry]:
    messages = Message.objects.filter(customer=customer).order_by("-sent_at", "-id")[:limit]
    return [
        TimelineEntry(
            at=message.sent_at,
            kind="message",
            object_id=message.pk,
            summary=f"{message.author_role} via {message.channel} (conversation {message.conversation_id})",
            text=message.text,
        )
        for message in messages
    ]


def customer_timeline(*, customer: Customer, limit: int = 200) -> list[TimelineEntry]:
    """The customer's orders, events and messages merged, newest first, at most ``limit`` entries.

    Each source is read with its own ``LIMIT``, so a customer with millions of events costs three
    small indexed queries, not a full scan.
    """
    if limit <= 0:
        return []
    sources = [_order_entries(customer, limit), _event_entries(customer, limit), _message_entries(customer, limit)]
    merged = heapq.merge(*sources, key=lambda entry: entry.at, reverse=True)
    return list(islice(merged, limit))


def customers_with_order_stats() -> QuerySet[Customer]:
    """All customers annotated with ``order_count``, ``last_order_at`` and ``completed_revenue``.

    Correlated subqueries rather than a GROUP BY over the join, so that filtering, searching and
    counting a page of a large customer table stays cheap.
    """
    orders = Order.objects.filter(customer=OuterRef("pk")).order_by().values("customer")
    return Customer.objects.annotate(
        order_count=Coalesce(Subquery(orders.annotate(n=Count("id")).values("n")[:1], output_field=IntegerField()), 0),
        last_order_at=Subquery(
            Order.objects.filter(customer=OuterRef("pk")).order_by("-placed_at").values("placed_at")[:1]
        ),
        completed_revenue=Coalesce(
            Subquery(
                orders.filter(status=OrderStatus.COMPLETED).annotate(total=Sum("amount")).values("total")[:1],
                output_field=DecimalField(max_digits=16, decimal_places=2),
            ),
            Decimal("0.00"),
            output_field=DecimalField(max_digits=16, decimal_places=2),
        ),
    )


def customers_search(
    *,
    segment: str | None = None,
    country: str | None = None,
    churned: bool | None = None,
    is_minimal: bool | None = None,
    text: str | None = None,
) -> QuerySet[Customer]:
    """Customers with their order stats, filtered by whichever arguments are given, oldest first.

    ``text`` matches the start of the external id, or any part of the name or email. ``churned=False`` is every
    customer not marked churned, those without a churn flag (null) included, as scoring counts them.
    """
    customers = customers_with_order_stats()
    if segment:
        customers = customers.filter(segment=segment)
    if country:
        customers = customers.filter(country=country)
    if churned:
        customers = customers.filter(churned=True)
    elif churned is not None:
        # Not marked churned: false, or no flag at all (imported without a label), as scoring counts them.
        customers = customers.exclude(churned=True)
    if is_minimal is not None:
        customers = customers.filter(is_minimal=is_minimal)
    if text:
        customers = customers.filter(
            Q(external_id__startswith=text) | Q(name__icontains=text) | Q(email__icontains=text)
        )
    return customers.order_by("id")


def messages_search(*, messages: QuerySet[Message], text: str) -> QuerySet[Message]:
    """``messages`` whose text contains each of ``text``'s terms in any case (a "quoted phrase" is one term), as the
    admin's own search matches, or whose conversation id or customer's external id is ``text`` exactly.

    Each condition can use an index, so PostgreSQL combines them instead of reading every message: the terms the
    trigram index of the upper-cased text (customers 0005, pg_trgm; a term of fewer than three characters has no
    trigram to look up, and is read from every message), the conversation id its own index, and the customers,
    looked up first, the (customer, time) index. Elsewhere (SQLite) every message is read.
    """
    text = text.strip()
    if not text:
        return messages
    customer_ids = list(Customer.objects.filter(external_id=text).values_list("id", flat=True)[:100])
    terms = Q()
    for term in smart_split(text):  # as Django's admin search splits it
        if term[0] in "\"'" and term[0] == term[-1] and len(term) > 1:
            term = unescape_string_literal(term)
        terms &= Q(text__icontains=term)
    return messages.filter(terms | Q(conversation_id=text) | Q(customer_id__in=customer_ids))


def demo_customers() -> QuerySet[Customer]:
    """The customers of the generated demo store (external ids starting with ``demo-``)."""
    return Customer.objects.filter(external_id__startswith=ID_PREFIX)


def customers_for_staff() -> QuerySet[Customer]:
    """Customers for the CRM staff list: order stats, the newest score and the one before it, and the open alert.

    Every figure is a correlated subquery (see ``customers_with_order_stats``,
    ``predictions.selectors.customers_annotate_latest_score`` and ``alerts.selectors.customers_annotate_open_alert``),
    so a page of customers is one query, however many scores and alerts they have.
    """
    from alerts.selectors import customers_annotate_open_alert
    from predictions.selectors import customers_annotate_latest_score

    customers = customers_annotate_latest_score(customers=customers_with_order_stats())
    return customers_annotate_open_alert(customers=customers)


@dataclass(frozen=True)
class CustomerRiskProfile:
    """What the customer's admin page shows about their risk: scores oldest first (the newest ``history_limit``),
    the newest score and the one before it, their alerts and their interventions (newest first)."""

    scores: list[ChurnScore]
    alerts: list[Alert]
    interventions: list[Intervention]

    @property
    def latest(self) -> ChurnScore | None:
        return self.scores[-1] if self.scores else None

    @property
    def previous(self) -> ChurnScore | None:
        return self.scores[-2] if len(self.scores) > 1 else None


def customer_risk_profile(*, customer: Customer, history_limit: int = 365) -> CustomerRiskProfile:
    """The customer's scores, alerts and interventions for their admin page: three queries."""
    from alerts.selectors import alerts_queue, customer_interventions
    from predictions.selectors import customer_score_history

    return CustomerRiskProfile(
        scores=customer_score_history(customer_id=customer.pk, limit=history_limit),
        alerts=list(alerts_queue(customer_id=customer.pk)),
        interventions=list(customer_interventions(customer_id=customer.pk)),
    )


def customer_profile_changes(*, customer_id: int, limit: int = 50) -> list[CustomerProfileChange]:
    """The customer's newest ``limit`` profile changes, newest first."""
    return list(CustomerProfileChange.objects.filter(customer_id=customer_id).order_by("-changed_at", "-id")[:limit])


def customers_erasure_counts(*, customer_ids: list[int]) -> dict[str, int]:
    """How many rows erasing these customers deletes, by model (verbose name in the plural): one COUNT per model
    that refers to customers, never the rows themselves (a busy customer has 100,000 events)."""
    counts = {str(Customer._meta.verbose_name_plural): len(customer_ids)}
    for relation in Customer._meta.related_objects:
        if relation.on_delete is not CASCADE:
            continue
        model = relation.related_model
        count = model._default_manager.filter(**{f"{relation.field.name}__in": customer_ids}).order_by().count()
        if count:
            counts[str(model._meta.verbose_name_plural)] = count
    return counts
