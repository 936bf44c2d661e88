"""The alert queue for CRM staff: filters by tier, segment and status; bulk acknowledge, dismiss and send
coupon; the customer's risk factors and latest messages beside each alert. Every change goes through a service,
so it lands in the append-only audit log."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator

from alerts.models import Alert, AlertRule, AlertStatus, AuditEntry, Intervention
from alerts.selectors import customer_message_snippets
from alerts.services import (
    AlertTransitionError,
    alert_rule_create,
    alert_rule_update,
    alert_send_coupon,
    alert_transition,
    alert_update,
)


def _actor(request: HttpRequest) -> str:
    return f"user:{request.user.get_username()}"


@admin.register(AlertRule)
class AlertRuleAdmin(admin.ModelAdmin):
    list_display = ["name", "active", "trigger", "action", "holdout_fraction", "cooldown_days", "updated_at"]
    list_filter = ["active", "trigger", "action"]
    search_fields = ["name", "description"]
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}

    def save_model(self, request: HttpRequest, obj: AlertRule, form, change: bool) -> None:  # noqa: ANN001
        fields = {name: form.cleaned_data[name] for name in form.changed_data if name in form.cleaned_data}
        if change:
            if fields:
                updated = alert_rule_update(rule=obj, actor=_actor(request), **fields)
                obj.pk = updated.pk
        else:
            created = alert_rule_create(
                actor=_actor(request), **{name: value for name, value in form.cleaned_data.items()}
            )
            obj.pk = created.pk

    def has_delete_permission(self, request: HttpRequest, obj: AlertRule | None = None) -> bool:
        return False  # rules are deactivated, never deleted: alerts and the audit log point at them


class SegmentFilter(admin.SimpleListFilter):
    title = "segment"
    parameter_name = "segment"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        segments = Alert.objects.order_by().values_list("customer__segment", flat=True).distinct()
        return [(segment, segment or "(none)") for segment in sorted(set(segments))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Alert]) -> QuerySet[Alert]:
        value = self.value()
        return queryset if value is None else queryset.filter(customer__segment=value)


class InterventionInline(admin.TabularInline):
    model = Intervention
    fields = ["kind", "status", "reason", "coupon_code", "sent_at", "attempts", "response_status", "outcome"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Alert | None = None) -> bool:
        return False


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    list_display = [
        "id", "customer_link", "segment", "rule", "risk_tier", "probability_percent", "expected_loss", "status",
        "holdout", "assignee", "created_at",
    ]  # fmt: skip
    list_filter = ["status", "risk_tier", SegmentFilter, "rule", "holdout"]
    list_select_related = ["customer", "rule", "assignee"]
    search_fields = ["customer__external_id", "customer__name", "customer__email"]
    ordering = ["-created_at", "-expected_loss"]
    actions = ["acknowledge", "dismiss", "send_coupon"]
    inlines = [InterventionInline]
    fields = [
        "customer_link", "rule", "status", "assignee", "notes", "risk_factors", "message_snippets", "as_of",
        "probability_percent", "risk_tier", "customer_value", "expected_loss", "holdout", "period_start",
    ]  # fmt: skip
    readonly_fields = [
        "customer_link", "rule", "status", "risk_factors", "message_snippets", "as_of", "probability_percent",
        "risk_tier", "customer_value", "expected_loss", "holdout", "period_start",
    ]  # fmt: skip
    autocomplete_fields = []

    @admin.display(description="customer")
    def customer_link(self, alert: Alert) -> str:
        return format_html('<a href="/admin/customers/customer/{}/change/">{}</a>', alert.customer_id, alert.customer)

    @admin.display(description="segment")
    def segment(self, alert: Alert) -> str:
        return alert.customer.segment

    @admin.display(description="churn probability", ordering="probability")
    def probability_percent(self, alert: Alert) -> str:
        return f"{alert.probability:.1%}"

    @admin.display(description="risk factors")
    def risk_factors(self, alert: Alert) -> str:
        factors = [f for f in alert.top_factors or [] if isinstance(f, dict)]
        if not factors:
            return "-"
        return format_html(
            "<ul>{}</ul>",
            format_html_join(
                "",
                "<li><strong>{}</strong> ({}) {}</li>",
                (
                    (
                        str(f.get("factor", "")),
                        str(f.get("direction", "")),
                        Truncator(str(f.get("evidence", ""))).chars(160),
                    )
                    for f in factors
                ),
            ),
        )

    @admin.display(description="latest messages")
    def message_snippets(self, alert: Alert) -> str:
        snippets = customer_message_snippets(customer_id=alert.customer_id)
        if not snippets:
            return "-"
        return format_html(
            "<ul>{}</ul>",
            format_html_join(
                "",
                "<li>{} {} via {}: {}</li>",
                ((f"{m.sent_at:%Y-%m-%d}", m.author_role, m.channel, Truncator(m.text).chars(200)) for m in snippets),
            ),
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # alerts come from rules

    def has_delete_permission(self, request: HttpRequest, obj: Alert | None = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: Alert, form, change: bool) -> None:  # noqa: ANN001
        alert_update(
            alert=obj,
            actor=_actor(request),
            assignee=form.cleaned_data.get("assignee"),
            notes=form.cleaned_data.get("notes"),
        )

    def _transition(self, request: HttpRequest, queryset: QuerySet[Alert], status: str) -> None:
        done, refused = 0, []
        for alert in queryset:
            try:
                alert_transition(alert=alert, status=status, actor=_actor(request))
                done += 1
            except AlertTransitionError as error:
                refused.append(str(error))
        self.message_user(request, f"{done} alert(s) now {status}.", messages.SUCCESS)
        if refused:
            self.message_user(request, "; ".join(refused[:10]), messages.WARNING)

    @admin.action(description="Acknowledge selected alerts", permissions=["change"])
    def acknowledge(self, request: HttpRequest, queryset: QuerySet[Alert]) -> None:
        self._transition(request, queryset, AlertStatus.ACKNOWLEDGED)

    @admin.action(description="Dismiss selected alerts", permissions=["change"])
    def dismiss(self, request: HttpRequest, queryset: QuerySet[Alert]) -> None:
        self._transition(request, queryset, AlertStatus.DISMISSED)

    @admin.action(description="Send a coupon email to the selected alerts' customers", permissions=["change"])
    def send_coupon(self, request: HttpRequest, queryset: QuerySet[Alert]) -> None:
        statuses: dict[str, int] = {}
        for alert in queryset:
            intervention = alert_send_coupon(alert=alert, actor=_actor(request))
            statuses[intervention.status] = statuses.get(intervention.status, 0) + 1
        summary = ", ".join(f"{count} {status}" for status, count in sorted(statuses.items()))
        self.message_user(request, f"Coupon emails: {summary} (pending ones are sent by the email queue).")


@admin.register(Intervention)
class InterventionAdmin(admin.ModelAdmin):
    list_display = ["id", "kind", "customer", "status", "reason", "coupon_code", "sent_at", "attempts", "outcome"]
    list_filter = ["kind", "status", "outcome"]
    list_select_related = ["customer"]
    search_fields = ["customer__external_id", "coupon_code", "idempotency_key"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Intervention | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Intervention | None = None) -> bool:
        return False


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    """Append-only: readable, never added, changed or deleted here."""

    list_display = ["at", "actor", "action", "rule", "alert", "intervention"]
    list_select_related = ["rule", "alert", "intervention"]  # nullable links: not joined otherwise
    list_filter = ["action"]
    search_fields = ["actor", "action"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AuditEntry | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AuditEntry | None = None) -> bool:
        return False
