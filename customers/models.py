"""Customers and what they did: orders, browsing events and support conversation messages.

Domain fields that differ between industries (a telecom contract, a bank card tier, an
insurance policy type) live in ``Customer.attributes`` and ``Event.properties``, so finance,
insurance and telecom data fit without code changes. Text from customers is stored exactly
as given and always shown escaped.
"""

from __future__ import annotations

from django.contrib.postgres.indexes import GinIndex, OpClass
from django.db import models
from django.db.models import Q
from django.db.models.functions import Upper
from django.utils import timezone


class Customer(models.Model):
    id = models.BigAutoField(primary_key=True)
    external_id = models.CharField(max_length=255, unique=True)
    email = models.CharField(max_length=254, blank=True, default="")
    name = models.CharField(max_length=255, blank=True, default="")
    segment = models.CharField(max_length=64, blank=True, default="", db_index=True)
    country = models.CharField(max_length=64, blank=True, default="")
    language = models.CharField(max_length=16, blank=True, default="", help_text="Preferred language, e.g. en, zh.")
    signed_up_at = models.DateTimeField(null=True, blank=True)
    attributes = models.JSONField(default=dict, blank=True)
    # Marketing contact needs consent; an opt-out always wins and is kept with its time.
    marketing_consent = models.BooleanField(default=False)
    opted_out_at = models.DateTimeField(null=True, blank=True)
    # Explicit churn label for datasets that carry one (profile data); null when unknown.
    churned = models.BooleanField(null=True, blank=True)
    churned_at = models.DateTimeField(null=True, blank=True)
    # Created on the fly for an order, event or message whose customer was not imported yet.
    is_minimal = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.name or self.external_id

    @property
    def can_be_contacted(self) -> bool:
        return self.marketing_consent and self.opted_out_at is None


# Profile fields that models read and that can change over time; each change keeps the values before it.
PROFILE_FIELDS = ("segment", "country", "language", "attributes")


class CustomerProfileChange(models.Model):
    """A change of a customer's profile (segment, country, language, attributes), with the values before it.

    Snapshots at an earlier cutoff undo the changes made after it, so a model trained on past cutoffs never reads a
    segment or attribute the customer only got later. ``changed_at`` is when the change became known: the time of
    the import or edit that made it.
    """

    id = models.BigAutoField(primary_key=True)
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="profile_changes", db_index=False)
    changed_at = models.DateTimeField()
    previous = models.JSONField(
        default=dict, help_text="The changed fields' values before the change; attributes as the whole mapping."
    )
    source = models.CharField(max_length=255, blank=True, default="", help_text="import run, user or service")

    class Meta:
        ordering = ["-changed_at", "-id"]
        indexes = [models.Index(fields=["customer", "changed_at"], name="profile_change_customer_time")]

    def __str__(self) -> str:
        return f"{', '.join(sorted(self.previous))} changed at {timezone.localtime(self.changed_at):%Y-%m-%d %H:%M}"


class OrderStatus(models.TextChoices):
    COMPLETED = "completed", "completed"
    RETURNED = "returned", "returned"
    CANCELLED = "cancelled", "cancelled"
    REFUNDED = "refunded", "refunded"


# The columns of each activity table after its own and its customer's ids, in the order imports and the demo
# generator write them.
ORDER_COLUMNS = ("placed_at", "amount", "currency", "item_count", "status", "discount_amount", "status_changed_at")
EVENT_COLUMNS = ("kind", "occurred_at", "properties")
MESSAGE_COLUMNS = ("conversation_id", "channel", "author_role", "sent_at", "text")

# A negative amount is a money movement back to the customer: only a return or refund may carry one.
REFUND_STATUSES = (OrderStatus.RETURNED, OrderStatus.REFUNDED)


class Order(models.Model):
    id = models.BigAutoField(primary_key=True)
    external_id = models.CharField(max_length=255, unique=True)
    # No index of its own: the (customer, time) index below serves every lookup by customer, and a second
    # index would only slow down imports.
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="orders", db_index=False)
    placed_at = models.DateTimeField()
    amount = models.DecimalField(max_digits=14, decimal_places=2)
    currency = models.CharField(max_length=3, default="USD")
    item_count = models.PositiveIntegerField(default=1)
    status = models.CharField(max_length=16, choices=OrderStatus.choices, default=OrderStatus.COMPLETED)
    discount_amount = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    status_changed_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text=(
            "When a returned, refunded or cancelled order got that status. A snapshot before it reads the order as "
            "completed; unknown (empty) means the status holds from the order's placement."
        ),
    )

    class Meta:
        ordering = ["-placed_at"]
        indexes = [models.Index(fields=["customer", "placed_at"], name="order_customer_time")]
        constraints = [
            models.CheckConstraint(
                condition=Q(amount__gte=0) | Q(status__in=REFUND_STATUSES), name="order_negative_amount_only_refund"
            ),
            models.CheckConstraint(condition=Q(discount_amount__gte=0), name="order_discount_not_negative"),
        ]

    def __str__(self) -> str:
        return f"order {self.external_id}"


class Event(models.Model):
    """Browsing and app behaviour. Built for volume: big keys, one index on (customer, time)."""

    id = models.BigAutoField(primary_key=True)
    external_id = models.CharField(max_length=255, unique=True)
    # Indexed by (customer, time) below, as orders are.
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="events", db_index=False)
    kind = models.CharField(max_length=64, help_text="Free text: page_view, search, add_to_cart, login, ...")
    occurred_at = models.DateTimeField()
    properties = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-occurred_at"]
        indexes = [models.Index(fields=["customer", "occurred_at"], name="event_customer_time")]

    def __str__(self) -> str:
        return f"{self.kind} at {timezone.localtime(self.occurred_at):%Y-%m-%d %H:%M}"


class MessageChannel(models.TextChoices):
    CHAT = "chat", "chat"
    EMAIL = "email", "email"
    PHONE = "phone", "phone"
    REVIEW = "review", "review"


class AuthorRole(models.TextChoices):
    CUSTOMER = "customer", "customer"
    AGENT = "agent", "agent"


class Message(models.Model):
    """One message of a customer-service conversation, in any language, stored exactly as given."""

    id = models.BigAutoField(primary_key=True)
    external_id = models.CharField(max_length=255, unique=True)
    # Indexed by (customer, time) below, as orders are.
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="messages", db_index=False)
    conversation_id = models.CharField(max_length=255, db_index=True)
    channel = models.CharField(max_length=16, choices=MessageChannel.choices, default=MessageChannel.CHAT)
    author_role = models.CharField(max_length=16, choices=AuthorRole.choices, default=AuthorRole.CUSTOMER)
    sent_at = models.DateTimeField()
    text = models.TextField()

    class Meta:
        ordering = ["-sent_at"]
        indexes = [
            models.Index(fields=["customer", "sent_at"], name="message_customer_time"),
            # The admin's message search (customers.selectors.messages_search): trigrams of the upper-cased text serve
            # its case-insensitive substring match on PostgreSQL (pg_trgm), which otherwise reads every message.
            GinIndex(OpClass(Upper("text"), name="gin_trgm_ops"), name="message_text_trigram"),
        ]

    def __str__(self) -> str:
        return f"{self.author_role} via {self.channel} at {timezone.localtime(self.sent_at):%Y-%m-%d %H:%M}"


class ImportKind(models.TextChoices):
    CUSTOMERS = "customers", "customers"
    ORDERS = "orders", "orders"
    EVENTS = "events", "events"
    MESSAGES = "messages", "messages"


class ImportRun(models.Model):
    """One import of a file or request body: what came in, what was kept, and every rejected row."""

    class Status(models.TextChoices):
        RUNNING = "running", "running"
        COMPLETED = "completed", "completed"
        COMPLETED_WITH_ERRORS = "completed_with_errors", "completed with errors"
        FAILED = "failed", "failed"

    id = models.BigAutoField(primary_key=True)
    kind = models.CharField(max_length=16, choices=ImportKind.choices)
    source = models.CharField(max_length=1024, help_text="File name or 'api'.")
    source_sha256 = models.CharField(max_length=64, blank=True, default="")
    status = models.CharField(max_length=32, choices=Status.choices, default=Status.RUNNING)
    dry_run = models.BooleanField(default=False)
    rows_total = models.PositiveBigIntegerField(default=0)
    rows_imported = models.PositiveBigIntegerField(default=0)
    rows_unchanged = models.PositiveBigIntegerField(default=0)
    rows_rejected = models.PositiveBigIntegerField(default=0)
    customers_created = models.PositiveBigIntegerField(default=0)
    errors = models.JSONField(default=list, blank=True, help_text="The first rejected rows: row, field, reason.")
    started_by = models.CharField(max_length=255, blank=True, default="")
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"{self.kind} from {self.source} ({self.status})"
