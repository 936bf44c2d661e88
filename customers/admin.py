"""Admin pages of the customers app.

Customer text (names, messages, event properties) is shown through ``format_html`` and template
autoescaping only, never ``mark_safe``. The event table is built for volume: read-only, no full
result count, an estimated total on PostgreSQL and ordering by primary key.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from customers.exports import write_customers_csv, write_rows_csv
from customers.models import Customer, Event, ImportRun, Message, Order
from customers.selectors import customer_timeline, customers_with_order_stats
from customers.services import customer_opt_out

TIMELINE_LIMIT = 200
COMMON_EVENT_KINDS = ("page_view", "search", "add_to_cart", "wishlist", "login")


class EstimatedCountPaginator(Paginator):
    """Counts exactly, except an unfiltered large PostgreSQL table, where the planner's estimate is used.

    ``SELECT count(*)`` over tens of millions of events takes seconds on every page view; the page
    links only need an approximate total.
    """

    exact_below = 100_000

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if isinstance(queryset, QuerySet) and not queryset.query.where:
            connection = connections[queryset.db]
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)",
                        [queryset.model._meta.db_table],
                    )
                    row = cursor.fetchone()
                if row and row[0] is not None and row[0] >= self.exact_below:
                    return int(row[0])
        return super().count


class OptedOutFilter(admin.SimpleListFilter):
    title = "opted out"
    parameter_name = "opted_out"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("yes", "Yes"), ("no", "No")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Customer]) -> QuerySet[Customer]:
        if self.value() == "yes":
            return queryset.filter(opted_out_at__isnull=False)
        if self.value() == "no":
            return queryset.filter(opted_out_at__isnull=True)
        return queryset


def _csv_response(name: str) -> HttpResponse:
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}-{timezone.now():%Y%m%d-%H%M%S}.csv"'
    # A byte-order mark, so that Excel reads UTF-8 (Chinese text) correctly.
    response.write("\ufeff")
    return response


@admin.action(description="Export selected customers to CSV (spreadsheet-safe)")
def export_customers_csv(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet) -> HttpResponse:
    response = _csv_response("customers")
    write_customers_csv(customers=queryset.order_by("pk").iterator(chunk_size=2000), stream=response)
    return response


def export_rows_csv_action(*columns: str) -> object:
    """An admin action exporting the selected rows' ``columns`` (``customer__external_id`` style paths allowed)."""

    @admin.action(description="Export selected rows to CSV (spreadsheet-safe)")
    def export_rows_csv(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet) -> HttpResponse:
        response = _csv_response(modeladmin.model._meta.model_name)
        rows = queryset.order_by("pk").values_list(*columns).iterator(chunk_size=2000)
        write_rows_csv(header=columns, rows=rows, stream=response)
        return response

    return export_rows_csv


@admin.action(description="Opt selected customers out of marketing")
def opt_out_customers(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet) -> None:
    now = timezone.now()
    changed = 0
    for customer in queryset.only("pk", "opted_out_at").iterator(chunk_size=500):
        was_opted_out = customer.opted_out_at is not None
        customer_opt_out(customer=customer, at=now)
        changed += not was_opted_out
    modeladmin.message_user(request, f"{changed} customer(s) opted out of marketing.", messages.SUCCESS)


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    list_display = (
        "external_id",
        "name",
        "email",
        "segment",
        "country",
        "marketing_consent",
        "opted_out",
        "is_minimal",
        "order_count",
    )
    list_display_links = ("external_id", "name")
    search_fields = ("=external_id", "email", "name")
    list_filter = ("segment", "country", "marketing_consent", OptedOutFilter, "churned", "is_minimal", "language")
    actions = (export_customers_csv, opt_out_customers)
    readonly_fields = ("order_count", "last_order_at", "created_at", "updated_at", "timeline")
    fieldsets = (
        (None, {"fields": ("external_id", "name", "email", "segment", "country", "language", "signed_up_at")}),
        ("Marketing", {"fields": ("marketing_consent", "opted_out_at")}),
        ("Churn label (profile data only)", {"fields": ("churned", "churned_at")}),
        ("Domain attributes", {"fields": ("attributes", "is_minimal")}),
        ("Activity", {"fields": ("order_count", "last_order_at", "created_at", "updated_at")}),
        (f"Timeline (newest {TIMELINE_LIMIT} orders, events and messages)", {"fields": ("timeline",)}),
    )
    list_per_page = 50

    def get_queryset(self, request: HttpRequest) -> QuerySet[Customer]:
        queryset = customers_with_order_stats()
        ordering = self.get_ordering(request)
        return queryset.order_by(*ordering) if ordering else queryset

    @admin.display(description="orders", ordering="order_count")
    def order_count(self, customer: Customer) -> int:
        return getattr(customer, "order_count", 0)

    @admin.display(description="last order", ordering="last_order_at")
    def last_order_at(self, customer: Customer) -> object:
        return getattr(customer, "last_order_at", None)

    @admin.display(description="opted out", boolean=True, ordering="opted_out_at")
    def opted_out(self, customer: Customer) -> bool:
        return customer.opted_out_at is not None

    @admin.display(description="timeline")
    def timeline(self, customer: Customer) -> SafeString | str:
        if customer.pk is None:
            return "-"
        entries = customer_timeline(customer=customer, limit=TIMELINE_LIMIT)
        if not entries:
            return "no orders, events or messages yet"
        rows = format_html_join(
            "",
            '<tr class="timeline-{}"><td style="white-space:nowrap">{}</td><td><a href="{}">{}</a></td><td>{}</td>'
            '<td style="white-space:pre-wrap">{}</td></tr>',
            (
                (
                    entry.kind,
                    date_format(timezone.localtime(entry.at), "Y-m-d H:i"),
                    reverse(f"admin:customers_{entry.kind}_change", args=[entry.object_id]),
                    entry.kind,
                    entry.summary,
                    entry.text,
                )
                for entry in entries
            ),
        )
        return format_html(
            '<table class="customer-timeline"><thead><tr><th>when</th><th>what</th><th>summary</th><th>text</th>'
            "</tr></thead><tbody>{}</tbody></table>",
            rows,
        )


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = (
        "external_id",
        "customer",
        "placed_at",
        "amount",
        "currency",
        "item_count",
        "status",
        "discount_amount",
    )
    list_filter = ("status", "currency")
    date_hierarchy = "placed_at"
    search_fields = ("=external_id", "=customer__external_id", "customer__email")
    list_select_related = ("customer",)
    raw_id_fields = ("customer",)
    actions = (
        export_rows_csv_action(
            "external_id", "customer__external_id", "placed_at", "amount", "currency", "item_count", "status",
            "discount_amount",
        ),
    )  # fmt: skip


class EventKindFilter(admin.SimpleListFilter):
    """Kinds seen among the latest events plus the usual ones: no DISTINCT over the whole event table."""

    title = "kind"
    parameter_name = "kind"
    sample_size = 10_000

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        recent = Event.objects.order_by("-pk").values_list("kind", flat=True)[: self.sample_size]
        kinds = sorted(set(COMMON_EVENT_KINDS) | set(recent))
        return [(kind, kind) for kind in kinds]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Event]) -> QuerySet[Event]:
        return queryset.filter(kind=self.value()) if self.value() else queryset


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows that only an import or the application writes: staff may look, never add, change or delete."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = ("external_id", "customer", "kind", "occurred_at")
    list_filter = (EventKindFilter,)
    search_fields = ("=external_id", "=customer__external_id")
    list_select_related = ("customer",)
    # The primary key is indexed and follows insertion order; sorting millions of rows by time is not.
    ordering = ("-pk",)
    sortable_by = ()
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    list_per_page = 100


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ("external_id", "customer", "channel", "author_role", "sent_at", "short_text")
    list_filter = ("channel", "author_role")
    search_fields = ("text", "=conversation_id", "=customer__external_id")
    list_select_related = ("customer",)
    raw_id_fields = ("customer",)
    date_hierarchy = "sent_at"
    actions = (
        export_rows_csv_action(
            "external_id", "customer__external_id", "conversation_id", "channel", "author_role", "sent_at", "text"
        ),
    )

    @admin.display(description="text")
    def short_text(self, message: Message) -> str:
        # Plain text: the changelist escapes it.
        return message.text if len(message.text) <= 120 else message.text[:117] + "..."


@admin.register(ImportRun)
class ImportRunAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "kind",
        "source",
        "status",
        "dry_run",
        "rows_total",
        "rows_imported",
        "rows_unchanged",
        "rows_rejected",
        "customers_created",
        "started_at",
        "finished_at",
    )
    list_filter = ("kind", "status", "dry_run")
    search_fields = ("source", "=source_sha256", "started_by")
