"""The alert queue for CRM staff: filters by tier, segment and status; bulk acknowledge, dismiss and send
coupon; the customer's risk factors and latest messages beside each alert. Every change goes through a service,
so it lands in the append-only audit log."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.core.validators import MaxLengthValidator
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator

from alerts.models import (
    ALERT_NOTES_MAX_LENGTH,
    ALERT_QUEUE_ORDER,
    Alert,
    AlertRule,
    AlertStatus,
    AuditEntry,
    Intervention,
)
from alerts.selectors import alert_assignees, customer_message_snippets
from alerts.services import (
    alert_rule_create,
    alert_rule_update,
    alert_update,
    alerts_send_coupons,
    alerts_transition,
)
from churnsite.admin_tools import EstimatedCountPaginator, recent_values_filter
from customers.models import Customer


def _actor(request: HttpRequest) -> str:
    return f"user:{request.user.get_username()}"


class AlertRuleForm(forms.ModelForm):
    """The webhook secret is write-only, as in the API: never shown, not even to staff who may change rules."""

    new_webhook_secret = forms.CharField(
        label="Webhook secret",
        required=False,
        strip=False,
        max_length=AlertRule._meta.get_field("webhook_secret").max_length,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Write-only: type a new secret to replace the current one; leave blank to keep it.",
    )

    class Meta:
        model = AlertRule
        fields = [  # noqa: RUF012 - Django reads this class attribute
            f.name for f in AlertRule._meta.get_fields() if f.concrete and f.editable and f.name != "webhook_secret"
        ]

    def clean(self) -> dict[str, object]:
        cleaned = super().clean()
        if secret := cleaned.get("new_webhook_secret"):
            # Validated with the rule (a webhook rule needs a secret); the service saves it, not this form.
            self.instance.webhook_secret = secret
        return cleaned

    def _update_errors(self, errors: ValidationError) -> None:
        # The rule's validation names webhook_secret, which this form shows as new_webhook_secret.
        if hasattr(errors, "error_dict") and "webhook_secret" in errors.error_dict:
            errors.error_dict.setdefault("new_webhook_secret", []).extend(errors.error_dict.pop("webhook_secret"))
        super()._update_errors(errors)


@admin.register(AlertRule)
class AlertRuleAdmin(admin.ModelAdmin):
    form = AlertRuleForm
    list_display = ["name", "active", "trigger", "action", "holdout_fraction", "cooldown_days", "updated_at"]
    list_filter = ["active", "trigger", "action"]
    search_fields = ["name", "description"]
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        # The list accepts filters on any field in its URL: ?webhook_secret__startswith=a, then ab, ... would read
        # the write-only secret one character at a time (Django's user admin refuses password lookups alike).
        if lookup.startswith("webhook_secret"):
            return False
        return super().lookup_allowed(lookup, value, request)

    @admin.display(description="Webhook secret")
    def webhook_secret_state(self, obj: AlertRule) -> str:
        return "set (not shown)" if obj.webhook_secret else "not set"

    def get_fields(self, request: HttpRequest, obj: AlertRule | None = None) -> list[str]:
        fields = list(super().get_fields(request, obj))
        if obj is not None and not self.has_change_permission(request, obj):
            fields.remove("new_webhook_secret")  # a view-only page says whether a secret is set, nothing more
        return fields

    def get_readonly_fields(self, request: HttpRequest, obj: AlertRule | None = None) -> list[str]:
        return [*super().get_readonly_fields(request, obj), "webhook_secret_state"]

    def save_model(self, request: HttpRequest, obj: AlertRule, form, change: bool) -> None:  # noqa: ANN001
        data = dict(form.cleaned_data)
        secret = data.pop("new_webhook_secret", "")
        if change:
            fields = {name: data[name] for name in form.changed_data if name in data}
            if secret:
                fields["webhook_secret"] = secret
            if fields:
                updated = alert_rule_update(rule=obj, actor=_actor(request), **fields)
                obj.pk = updated.pk
        else:
            created = alert_rule_create(actor=_actor(request), webhook_secret=secret, **data)
            obj.pk = created.pk

    def has_delete_permission(self, request: HttpRequest, obj: AlertRule | None = None) -> bool:
        return False  # rules are deactivated, never deleted: alerts and the audit log point at them


# The choices of these filters come from the newest alerts, not from a DISTINCT over every alert on each page.
SegmentFilter = recent_values_filter("customer__segment", title="segment", parameter="segment")
RiskTierFilter = recent_values_filter("risk_tier", title="risk tier", known=("low", "medium", "high"))


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
    list_filter = ["status", RiskTierFilter, SegmentFilter, "rule", "holdout"]
    list_select_related = ["customer", "rule", "assignee"]
    search_fields = ["customer__external_id", "customer__name", "customer__email"]
    ordering = ALERT_QUEUE_ORDER
    show_full_result_count = False
    paginator = EstimatedCountPaginator
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

    @admin.display(description="customer")
    def customer_name(self, alert: Alert) -> str:
        return str(alert.customer)

    def _may_open_customers(self, request: HttpRequest) -> bool:
        customer_admin = self.admin_site._registry.get(Customer)  # noqa: SLF001 - the admin's own registry
        return customer_admin is not None and customer_admin.has_view_or_change_permission(request)

    def _customer_column(self, request: HttpRequest, names: list[str] | tuple[str, ...]) -> list[str]:
        """The customer linked only for staff who may open the customer's page (others would get a 403)."""
        if self._may_open_customers(request):
            return list(names)
        return ["customer_name" if name == "customer_link" else name for name in names]

    def get_list_display(self, request: HttpRequest) -> list[str]:
        return self._customer_column(request, super().get_list_display(request))

    def get_fields(self, request: HttpRequest, obj: Alert | None = None) -> list[str]:
        return self._customer_column(request, super().get_fields(request, obj))

    def get_readonly_fields(self, request: HttpRequest, obj: Alert | None = None) -> list[str]:
        return self._customer_column(request, super().get_readonly_fields(request, obj))

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
                (
                    (
                        f"{timezone.localtime(m.sent_at):%Y-%m-%d}",
                        m.author_role,
                        m.channel,
                        Truncator(m.text).chars(200),
                    )
                    for m in snippets
                ),
            ),
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # alerts come from rules

    def has_delete_permission(self, request: HttpRequest, obj: Alert | None = None) -> bool:
        return False

    def formfield_for_foreignkey(self, db_field, request: HttpRequest, **kwargs: object):  # noqa: ANN001, ANN201
        if db_field.name == "assignee":  # as in the API: active staff who may work alerts
            kwargs["queryset"] = alert_assignees()
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def formfield_for_dbfield(self, db_field, request: HttpRequest, **kwargs: object):  # noqa: ANN001, ANN201
        field = super().formfield_for_dbfield(db_field, request, **kwargs)
        if db_field.name == "notes" and field is not None:
            field.max_length = ALERT_NOTES_MAX_LENGTH  # as in the API
            field.validators.append(MaxLengthValidator(ALERT_NOTES_MAX_LENGTH))
        return field

    def save_model(self, request: HttpRequest, obj: Alert, form, change: bool) -> None:  # noqa: ANN001
        alert_update(
            alert=obj,
            actor=_actor(request),
            assignee=form.cleaned_data.get("assignee"),
            notes=form.cleaned_data.get("notes"),
        )

    def _transition(self, request: HttpRequest, queryset: QuerySet[Alert], status: str) -> None:
        # One service call for the whole selection ("select all" across pages): a few queries per chunk of alerts.
        result = alerts_transition(alerts=queryset, status=status, actor=_actor(request))
        self.message_user(request, f"{result.changed + result.unchanged} alert(s) now {status}.", messages.SUCCESS)
        if result.refused:
            self.message_user(request, _refusals(result.refused), messages.WARNING)

    @admin.action(description="Acknowledge selected alerts", permissions=["change"])
    def acknowledge(self, request: HttpRequest, queryset: QuerySet[Alert]) -> None:
        self._transition(request, queryset, AlertStatus.ACKNOWLEDGED)

    @admin.action(description="Dismiss selected alerts", permissions=["change"])
    def dismiss(self, request: HttpRequest, queryset: QuerySet[Alert]) -> None:
        self._transition(request, queryset, AlertStatus.DISMISSED)

    @admin.action(description="Send a coupon email to the selected alerts' customers", permissions=["change"])
    def send_coupon(self, request: HttpRequest, queryset: QuerySet[Alert]) -> None:
        result = alerts_send_coupons(alerts=queryset, actor=_actor(request))
        if result.made:
            summary = _status_counts(result.made)
            self.message_user(request, f"Coupon emails: {summary} (pending ones are sent by the email queue).")
        elif result.existing:
            self.message_user(request, "No new coupon email: the selected alerts already had theirs.")
        if result.existing:  # one coupon per alert: an existing one is returned, nothing is sent again
            summary = _status_counts(result.existing)
            self.message_user(request, f"{len(result.existing)} alert(s) already had one ({summary}); not sent again.")
        if result.refused:
            refused = result.refused
            self.message_user(request, f"{len(refused)} refused: {_refusals(refused)}", messages.WARNING)


def _status_counts(interventions: list[Intervention]) -> str:
    statuses: dict[str, int] = {}
    for intervention in interventions:
        statuses[intervention.status] = statuses.get(intervention.status, 0) + 1
    return ", ".join(f"{count} {status}" for status, count in sorted(statuses.items()))


def _refusals(refused: list[str]) -> str:
    """The first ten reasons, and how many more there are."""
    return "; ".join(refused[:10]) + (f"; and {len(refused) - 10} more" if len(refused) > 10 else "")


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
    list_filter = [recent_values_filter("action")]  # the log only grows: no DISTINCT over all of it per page
    search_fields = ["actor", "action"]
    show_full_result_count = False
    paginator = EstimatedCountPaginator

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AuditEntry | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AuditEntry | None = None) -> bool:
        return False
