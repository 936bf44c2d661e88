"""Admin pages of the customers app.

Customer text (names, messages, event properties, the evidence quoted in risk factors) is shown through
``format_html`` and template autoescaping only, never ``mark_safe``; the one ``mark_safe`` is the score chart,
an SVG drawn by matplotlib from dates and probabilities. The event table is built for volume: read-only, no
full result count, an estimated total on PostgreSQL and ordering by primary key.

The customer list reads every figure (newest score, change, open alert) in correlated subqueries of one
selector, so a page costs the same few queries whatever its size. The customer page adds the score history,
the newest factors with their evidence, the alerts and interventions, and three buttons (rescore now, send
coupon, opt out) that POST to URLs of this admin; each calls one service.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable
from itertools import chain

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import display_for_value, unquote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.formats import date_format
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.http import require_POST

from alerts.models import Intervention, InterventionStatus
from alerts.services import CouponNotAllowed, IdempotencyKeyReused, customer_send_coupon, idempotent_request
from churnsite.admin_tools import EstimatedCountPaginator, recent_values_filter
from churnsite.dashboard.charts import line_svg
from customers.exports import customers_csv_lines, iter_csv_lines
from customers.models import Customer, Event, ImportRun, Message, Order
from customers.selectors import (
    CustomerRiskProfile,
    customer_profile_changes,
    customer_risk_profile,
    customer_timeline,
    customers_erasure_counts,
    customers_for_staff,
    messages_search,
)
from customers.services import customer_opt_out, customer_save, customers_erase, customers_opt_out
from predictions.models import RiskTier
from predictions.services.scoring import ChampionUnavailable, customer_rescore_now

TIMELINE_LIMIT = 200
COMMON_EVENT_KINDS = ("page_view", "search", "add_to_cart", "wishlist", "login")
RISK_COLOURS = {RiskTier.HIGH: "#ba2121", RiskTier.MEDIUM: "#b26a00", RiskTier.LOW: "#2e7d32"}
# A change of less than half a percentage point between two scores shows as flat.
FLAT_CHANGE = 0.005
# The key the send-coupon form carries, made when the page is shown: a form sent twice sends once.
REQUEST_KEY = re.compile(r"^[0-9a-f]{32}$")
# Sending a coupon from the customer page needs what the alert admin's "send coupon" action needs.
SEND_COUPON_PERMISSION = "alerts.change_alert"
VIEW_ALERT_PERMISSION = "alerts.view_alert"
TIMELINE_MODELS = {"order": Order, "event": Event, "message": Message}
PROFILE_HISTORY_LIMIT = 50
# The customers the erasure confirmation names one by one (the rows about them are counted, never listed).
ERASURE_LISTED = 100


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


class RiskTierFilter(admin.SimpleListFilter):
    """By the tier of the customer's newest score (``latest_risk_tier``, annotated by ``customers_for_staff``)."""

    title = "risk tier"
    parameter_name = "risk_tier"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [(tier.value, tier.label) for tier in reversed(RiskTier)] + [("none", "not scored")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Customer]) -> QuerySet[Customer]:
        if self.value() == "none":
            return queryset.filter(latest_score_id__isnull=True)
        if self.value() in RiskTier.values:
            return queryset.filter(latest_risk_tier=self.value())
        return queryset


class OpenAlertFilter(admin.SimpleListFilter):
    """Whether the customer has an open or acknowledged alert (``open_alert_id``)."""

    title = "open alert"
    parameter_name = "open_alert"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("yes", "Yes"), ("no", "No")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Customer]) -> QuerySet[Customer]:
        if self.value() == "yes":
            return queryset.filter(open_alert_id__isnull=False)
        if self.value() == "no":
            return queryset.filter(open_alert_id__isnull=True)
        return queryset


def risk_badge(tier: str | None) -> SafeString:
    """A coloured pill naming the risk tier ("not scored" when there is none)."""
    if not tier:
        return format_html('<span class="risk-badge risk-none" style="color:{}">not scored</span>', "#666")
    return format_html(
        '<span class="risk-badge risk-{}" style="background:{};color:#fff;padding:1px 7px;border-radius:9px;'
        'font-weight:bold;white-space:nowrap">{}</span>',
        tier,
        RISK_COLOURS.get(tier, "#666"),
        tier,
    )


def probability_change(latest: float | None, previous: float | None) -> SafeString | str:
    """An arrow and the change in percentage points: red up (riskier), green down, grey flat."""
    if latest is None:
        return "-"
    if previous is None:
        return format_html('<span class="risk-change risk-change-new" style="color:{}">first score</span>', "#666")
    delta = latest - previous
    if abs(delta) < FLAT_CHANGE:
        arrow, colour, name = "\u2192", "#666", "flat"
    elif delta > 0:
        arrow, colour, name = "\u25b2", "#ba2121", "up"
    else:
        arrow, colour, name = "\u25bc", "#2e7d32", "down"
    return format_html(
        '<span class="risk-change risk-change-{}" style="color:{};white-space:nowrap" title="previous {}">{} {}</span>',
        name,
        colour,
        f"{previous:.1%}",
        arrow,
        f"{delta * 100:+.1f} pts",
    )


def _csv_response(name: str, lines: Iterable[str]) -> StreamingHttpResponse:
    """CSV ``lines`` as a download, streamed a line at a time: a "select all" of a large table is never held whole
    (50,000 customers were a 14 MB body, held twice while it was sent)."""
    # A byte-order mark first, so that Excel reads UTF-8 (Chinese text) correctly.
    lines = chain(("\ufeff",), lines)
    response = StreamingHttpResponse(lines, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}-{timezone.now():%Y%m%d-%H%M%S}.csv"'
    return response


@admin.action(description="Export selected customers to CSV (spreadsheet-safe)")
def export_customers_csv(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet
) -> StreamingHttpResponse:
    return _csv_response("customers", customers_csv_lines(queryset.order_by("pk").iterator(chunk_size=2000)))


def export_rows_csv_action(*columns: str) -> object:
    """An admin action exporting the selected rows' ``columns`` (``customer__external_id`` style paths allowed)."""

    @admin.action(description="Export selected rows to CSV (spreadsheet-safe)")
    def export_rows_csv(
        modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet
    ) -> StreamingHttpResponse:
        rows = queryset.order_by("pk").values_list(*columns).iterator(chunk_size=2000)
        return _csv_response(modeladmin.model._meta.model_name, iter_csv_lines(header=columns, rows=rows))

    return export_rows_csv


@admin.action(description="Opt selected customers out of marketing", permissions=["change"])
def opt_out_customers(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet) -> None:
    # One service call for the whole selection ("select all" across pages): one UPDATE per chunk of customers.
    changed = customers_opt_out(customers=queryset)
    modeladmin.message_user(request, f"{changed} customer(s) opted out of marketing.", messages.SUCCESS)


def _actor(request: HttpRequest) -> str:
    return f"user:{request.user.get_username()}"


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    list_display = (
        "external_id",
        "name",
        "segment",
        "risk_tier",
        "probability",
        "score_change",
        "last_scored",
        "open_alert",
        "consent",
        "opted_out",
    )
    list_display_links = ("external_id", "name")
    search_fields = ("=external_id", "email", "name")
    list_filter = (
        RiskTierFilter, "segment", OpenAlertFilter, OptedOutFilter, "marketing_consent", "country", "churned",
        "is_minimal", "language",
    )  # fmt: skip
    actions = (export_customers_csv, opt_out_customers)
    # opted_out_at is the customer's own choice: set only by the opt-out service (first time kept), never undone here.
    readonly_fields = (
        "opted_out_at", "order_count", "last_order_at", "created_at", "updated_at", "profile_history", "timeline"
    )  # fmt: skip
    fieldsets = (
        (None, {"fields": ("external_id", "name", "email", "segment", "country", "language", "signed_up_at")}),
        ("Marketing", {"fields": ("marketing_consent", "opted_out_at")}),
        ("Churn label (profile data only)", {"fields": ("churned", "churned_at")}),
        ("Domain attributes", {"fields": ("attributes", "is_minimal")}),
        (
            "Profile history (values before each change; snapshots at earlier cutoffs read them)",
            {"fields": ("profile_history",)},
        ),
        ("Activity", {"fields": ("order_count", "last_order_at", "created_at", "updated_at")}),
        (f"Timeline (newest {TIMELINE_LIMIT} orders, events and messages)", {"fields": ("timeline",)}),
    )
    list_per_page = 50
    change_form_template = "customers/admin/customer_change_form.html"

    def save_model(self, request: HttpRequest, obj: Customer, form: object, change: bool) -> None:
        customer_save(customer=obj, source=_actor(request))

    def get_queryset(self, request: HttpRequest) -> QuerySet[Customer]:
        queryset = customers_for_staff()
        ordering = self.get_ordering(request)
        return queryset.order_by(*ordering) if ordering else queryset

    def get_ordering(self, request: HttpRequest) -> tuple[str, ...]:
        # The list shows the highest risk first: what CRM staff open it for (unscored customers sort last, at -1).
        # Elsewhere (customer choices in other admins' forms) the plain queryset has no annotation to sort by.
        match = getattr(request, "resolver_match", None)
        if match is not None and match.url_name == f"{self.opts.app_label}_{self.opts.model_name}_changelist":
            return ("-probability_sort", "id")
        return ()

    # --- list columns (annotations of customers_for_staff; no query per row) ---

    @admin.display(description="risk", ordering="latest_risk_tier")
    def risk_tier(self, customer: Customer) -> SafeString:
        return risk_badge(getattr(customer, "latest_risk_tier", None))

    @admin.display(description="probability", ordering="probability_sort")
    def probability(self, customer: Customer) -> str:
        value = getattr(customer, "latest_probability", None)
        return "-" if value is None else f"{value:.1%}"

    @admin.display(description="change")
    def score_change(self, customer: Customer) -> SafeString | str:
        return probability_change(
            getattr(customer, "latest_probability", None), getattr(customer, "previous_probability", None)
        )

    @admin.display(description="last scored", ordering="latest_scored_at")
    def last_scored(self, customer: Customer) -> str:
        scored_at = getattr(customer, "latest_scored_at", None)
        return "-" if scored_at is None else date_format(timezone.localtime(scored_at), "Y-m-d H:i")

    @admin.display(description="open alert", ordering="open_alert_id")
    def open_alert(self, customer: Customer) -> SafeString | str:
        alert_id = getattr(customer, "open_alert_id", None)
        if alert_id is None:
            return "no"
        return format_html(
            '<a href="{}" class="open-alert">yes (#{})</a>',
            reverse("admin:alerts_alert_change", args=[alert_id]),
            alert_id,
        )

    @admin.display(description="open alert", ordering="open_alert_id")
    def open_alert_unlinked(self, customer: Customer) -> str:
        alert_id = getattr(customer, "open_alert_id", None)
        return "no" if alert_id is None else f"yes (#{alert_id})"

    def get_list_display(self, request: HttpRequest) -> list[str]:
        columns = list(super().get_list_display(request))
        if request.user.has_perm(VIEW_ALERT_PERMISSION) or request.user.has_perm(SEND_COUPON_PERMISSION):
            return columns  # the admin opens an alert for staff who may view or change alerts
        # The alert linked only for staff who may open it (as the customer page's alert panel): others get a 403.
        return ["open_alert_unlinked" if name == "open_alert" else name for name in columns]

    @admin.display(description="orders", ordering="order_count")
    def order_count(self, customer: Customer) -> int:
        return getattr(customer, "order_count", 0)

    @admin.display(description="last order", ordering="last_order_at")
    def last_order_at(self, customer: Customer) -> object:
        # Formatted here: the change page shows a method's value with str(), which gave the UTC ISO form.
        return display_for_value(getattr(customer, "last_order_at", None), self.admin_site.empty_value_display)

    @admin.display(description="consent", boolean=True, ordering="marketing_consent")
    def consent(self, customer: Customer) -> bool:
        return customer.marketing_consent

    @admin.display(description="opted out", boolean=True, ordering="opted_out_at")
    def opted_out(self, customer: Customer) -> bool:
        return customer.opted_out_at is not None

    @admin.display(description="changes, newest first")
    def profile_history(self, customer: Customer) -> SafeString | str:
        if customer.pk is None:
            return "-"
        changes = customer_profile_changes(customer_id=customer.pk, limit=PROFILE_HISTORY_LIMIT)
        if not changes:
            return "no change recorded: the profile has been as shown since the customer was imported"
        rows = format_html_join(
            "",
            '<tr><td style="white-space:nowrap">{}</td><td style="white-space:pre-wrap">{}</td><td>{}</td></tr>',
            (
                (
                    date_format(timezone.localtime(change.changed_at), "Y-m-d H:i"),
                    "; ".join(
                        f"{name}: {json.dumps(value, ensure_ascii=False)}" for name, value in change.previous.items()
                    ),
                    change.source,
                )
                for change in changes
            ),
        )
        return format_html(
            '<table class="profile-history"><thead><tr><th>changed at</th><th>values before the change</th>'
            "<th>by</th></tr></thead><tbody>{}</tbody></table>",
            rows,
        )

    @admin.display(description="timeline")
    def timeline(self, customer: Customer) -> SafeString | str:
        if customer.pk is None:
            return "-"
        entries = customer_timeline(customer=customer, limit=TIMELINE_LIMIT)
        if not entries:
            return "no orders, events or messages yet"
        linkable = getattr(customer, "timeline_links", frozenset())  # set by get_object for the request's user
        rows = format_html_join(
            "",
            '<tr class="timeline-{}"><td style="white-space:nowrap">{}</td><td>{}</td><td>{}</td>'
            '<td style="white-space:pre-wrap">{}</td></tr>',
            (
                (
                    entry.kind,
                    date_format(timezone.localtime(entry.at), "Y-m-d H:i"),
                    format_html(
                        '<a href="{}">{}</a>',
                        reverse(f"admin:customers_{entry.kind}_change", args=[entry.object_id]),
                        entry.kind,
                    )
                    if entry.kind in linkable
                    else entry.kind,
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

    # --- erasure: deleting a customer deletes every row about them ---

    def get_deleted_objects(self, objs, request: HttpRequest):  # noqa: ANN001, ANN201 - Django's signature
        """The confirmation page's list: the customers, and how many rows about them go, counted per model.

        Not Django's default, which loads every related row and lists each one (a page of 100,000 events for a
        busy customer), and which asks for the delete permission of every model: staff who may delete customers
        may delete what is about them too (scores, events, alerts, retention actions), whose admins are
        read-only. The deletion itself is ``customers_erase`` (``delete_model``, ``delete_queryset``)."""
        customers = list(objs[: ERASURE_LISTED + 1]) if isinstance(objs, QuerySet) else list(objs)
        ids = list(objs.values_list("pk", flat=True)) if isinstance(objs, QuerySet) else [c.pk for c in customers]
        listed: list[str] = [
            format_html(
                '{}: <a href="{}">{}</a>',
                Customer._meta.verbose_name.capitalize(),
                reverse("admin:customers_customer_change", args=[customer.pk]),
                customer,
            )
            for customer in customers[:ERASURE_LISTED]
        ]
        if len(ids) > ERASURE_LISTED:
            listed.append(f"and {len(ids) - ERASURE_LISTED} more customers")
        perms_needed = set() if self.has_delete_permission(request) else {str(Customer._meta.verbose_name)}
        return listed, customers_erasure_counts(customer_ids=ids), perms_needed, []

    def delete_model(self, request: HttpRequest, obj: Customer) -> None:
        customers_erase(customers=Customer.objects.filter(pk=obj.pk), actor=_actor(request))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Customer]) -> None:
        customers_erase(customers=queryset, actor=_actor(request))

    # --- the customer page: risk panel and action buttons ---

    def get_object(self, request: HttpRequest, object_id: str, from_field: str | None = None) -> Customer | None:
        customer = super().get_object(request, object_id, from_field)
        if customer is not None:
            # The timeline links an order, event or message only for staff who may open its page (others: 403).
            customer.timeline_links = frozenset(
                kind
                for kind, model in TIMELINE_MODELS.items()
                if (model_admin := self.admin_site._registry.get(model)) is not None  # noqa: SLF001
                and model_admin.has_view_or_change_permission(request)
            )
        return customer

    def formfield_for_dbfield(self, db_field, request: HttpRequest, **kwargs: object):  # noqa: ANN001, ANN201
        if db_field.name == "email":  # as the importer: an address an email can be sent to, or nothing
            return forms.EmailField(
                required=False, max_length=db_field.max_length, label=db_field.verbose_name.capitalize()
            )
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        customer = self.get_object(request, unquote(object_id))
        context = dict(extra_context or {})
        if customer is not None:
            context.update(self._risk_context(customer_risk_profile(customer=customer)))
            context["send_coupon_key"] = uuid.uuid4().hex
            context["rescore_key"] = uuid.uuid4().hex
            # The buttons only for staff whose POST would be allowed (``_action_target``): rescore and opt-out need
            # the change permission of customers, a coupon that and the alerts permission too.
            can_change = self.has_change_permission(request, customer)
            context["can_change_customer"] = can_change
            context["can_send_coupon"] = can_change and request.user.has_perm(SEND_COUPON_PERMISSION)
            # As everywhere else (their admin pages, the API): alerts and interventions, whose coupon codes are
            # discounts anyone holding them can redeem, only for staff allowed to view them.
            context["can_view_alerts"] = request.user.has_perm(VIEW_ALERT_PERMISSION)
            context["can_view_interventions"] = request.user.has_perm("alerts.view_intervention")
        return super().change_view(request, object_id, form_url, extra_context=context)

    @staticmethod
    def _risk_context(profile: CustomerRiskProfile) -> dict[str, object]:
        latest, previous = profile.latest, profile.previous
        chart = None
        if profile.scores:
            svg = line_svg(
                x=[score.as_of for score in profile.scores],
                series={"churn probability": [score.probability for score in profile.scores]},
                title="Churn probability over time",
                ylabel="probability",
            )
            chart = mark_safe(svg)  # noqa: S308 - matplotlib output of dates and numbers; it escapes its text
        factors = [
            {
                "factor": str(factor.get("factor", "")),
                "direction": str(factor.get("direction", "")),
                "weight": factor.get("weight"),
                "evidence": str(factor.get("evidence", "")),
            }
            for factor in (latest.top_factors if latest else []) or []
            if isinstance(factor, dict)
        ]
        return {
            "risk": profile,
            "risk_latest": latest,
            "risk_percent": f"{latest.probability:.1%}" if latest else "",
            "risk_badge": risk_badge(latest.risk_tier if latest else None),
            "risk_change": probability_change(
                latest.probability if latest else None, previous.probability if previous else None
            ),
            "risk_chart": chart,
            "risk_factors": factors,
        }

    def get_urls(self) -> list[URLPattern]:
        name = f"{self.opts.app_label}_{self.opts.model_name}"
        wrap = self.admin_site.admin_view  # staff only (others go to the login page), CSRF checked
        custom = [
            path("<path:object_id>/rescore/", wrap(self.rescore_view), name=f"{name}_rescore"),
            path("<path:object_id>/send-coupon/", wrap(self.send_coupon_view), name=f"{name}_send_coupon"),
            path("<path:object_id>/opt-out/", wrap(self.opt_out_view), name=f"{name}_opt_out"),
        ]
        return custom + super().get_urls()

    def _action_target(self, request: HttpRequest, object_id: str) -> Customer:
        customer = self.get_object(request, unquote(object_id))
        if customer is None:
            raise Http404(f"no customer with id {object_id}")
        if not self.has_change_permission(request, customer):
            raise PermissionDenied
        return customer

    def _back_to(self, customer: Customer) -> HttpResponseRedirect:
        return HttpResponseRedirect(reverse("admin:customers_customer_change", args=[customer.pk]))

    @method_decorator(require_POST)
    def rescore_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        customer = self._action_target(request, object_id)
        key = request.POST.get("request_key", "")
        if not REQUEST_KEY.match(key):
            self.message_user(request, "The form was incomplete: reload the page and try again.", messages.ERROR)
            return self._back_to(customer)

        def rescore() -> tuple[int, object]:
            score = customer_rescore_now(customer=customer)
            return 201, {
                "model_version": score.model_version.name,
                "probability": score.probability,
                "risk_tier": score.risk_tier,
            }

        try:
            # The same form sent twice (a double click, a browser resubmit) stores one score.
            stored = idempotent_request(
                user=request.user,
                key=f"rescore:{customer.pk}:{key}",
                method="POST",
                path=request.path,
                body=b"",
                handler=rescore,
            )
        except (ChampionUnavailable, ValueError) as error:
            self.message_user(request, f"Not rescored: {error}", messages.ERROR)
        else:
            score = stored.body
            self.message_user(
                request,
                f"{'Already rescored' if stored.replayed else 'Rescored'} with {score['model_version']}: "
                f"{score['probability']:.1%} ({score['risk_tier']} risk).",
                messages.SUCCESS,
            )
        return self._back_to(customer)

    @method_decorator(require_POST)
    def send_coupon_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        customer = self._action_target(request, object_id)
        if not request.user.has_perm(SEND_COUPON_PERMISSION):
            raise PermissionDenied  # as for the alert admin's action: coupons are an alerts decision
        key = request.POST.get("request_key", "")
        if not REQUEST_KEY.match(key):
            self.message_user(request, "The form was incomplete: reload the page and try again.", messages.ERROR)
            return self._back_to(customer)
        started = timezone.now()
        try:
            intervention = customer_send_coupon(
                customer=customer, actor=_actor(request), user=request.user, request_key=key
            )
        except (CouponNotAllowed, IdempotencyKeyReused) as error:
            self.message_user(request, f"No coupon sent: {error}.", messages.WARNING)
        else:
            # A coupon made before this request: the same form sent twice, or an alert that already had its coupon.
            self.message_user(request, *_coupon_message(intervention, earlier=intervention.created_at < started))
        return self._back_to(customer)

    @method_decorator(require_POST)
    def opt_out_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        customer = self._action_target(request, object_id)
        already = customer.opted_out_at
        customer = customer_opt_out(customer=customer)
        if already is not None:
            self.message_user(
                request, f"Already opted out of marketing since {timezone.localtime(already):%Y-%m-%d %H:%M}."
            )
        else:
            self.message_user(
                request, "Opted out of marketing: no coupon or retention email from now on.", messages.SUCCESS
            )
        return self._back_to(customer)


def _coupon_message(intervention: Intervention, *, earlier: bool = False) -> tuple[SafeString, int]:
    """What staff read after "Send coupon": the outcome, why where nothing was sent, and a link; ``earlier``: the
    intervention was made before this request, which sent nothing again."""
    link = reverse("admin:alerts_intervention_change", args=[intervention.pk])
    status = intervention.status
    if earlier and status in (InterventionStatus.SENT, InterventionStatus.PENDING):
        when = intervention.sent_at or intervention.created_at
        text, level = (
            f"Nothing sent again: this coupon email (code {intervention.coupon_code}) was "
            f"{'sent' if status == InterventionStatus.SENT else 'queued'} before, "
            f"{timezone.localtime(when):%Y-%m-%d %H:%M}",
            messages.INFO,
        )
    elif status == InterventionStatus.SENT:
        text, level = (
            f"Coupon email sent: code {intervention.coupon_code}, {intervention.coupon_discount_percent}% off "
            f"until {intervention.coupon_valid_until:%Y-%m-%d}",
            messages.SUCCESS,
        )
    elif status == InterventionStatus.PENDING:
        text, level = (
            f"Coupon email queued (code {intervention.coupon_code}); the email queue sends it",
            messages.SUCCESS,
        )
    elif status == InterventionStatus.HOLDOUT:
        text, level = (
            f"No coupon sent: the customer is in the control group of rule {intervention.alert.rule.name}",
            messages.WARNING,
        )
    elif status == InterventionStatus.SUPPRESSED:
        text, level = f"No coupon sent: {intervention.reason}", messages.WARNING
    else:
        text, level = f"Coupon email {status}: {intervention.reason}", messages.ERROR
    return format_html('{} (<a href="{}">intervention #{}</a>).', text, link, intervention.pk), level


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
    # No filter or date drill-down that reads every row (currency's distinct values, the dates' range): the order
    # table is the largest one staff page through, with the events.
    list_filter = ("status",)
    search_fields = ("=external_id", "=customer__external_id", "customer__email")
    list_select_related = ("customer",)
    raw_id_fields = ("customer",)
    # The primary key is indexed and follows insertion order; sorting millions of rows by time is not.
    ordering = ("-pk",)
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    actions = (
        export_rows_csv_action(
            "external_id", "customer__external_id", "placed_at", "amount", "currency", "item_count", "status",
            "discount_amount",
        ),
    )  # fmt: skip


EventKindFilter = recent_values_filter("kind", known=COMMON_EVENT_KINDS)


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
    # Shown as the search box; the search itself is customers.selectors.messages_search (an index on PostgreSQL).
    search_fields = ("text", "=conversation_id", "=customer__external_id")
    search_help_text = 'Text in the message (each word, or "a phrase", in any case), or a conversation or customer id.'
    list_select_related = ("customer",)
    raw_id_fields = ("customer",)
    ordering = ("-pk",)  # as the orders and events: no sort of the whole table per page, no date drill-down
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    actions = (
        export_rows_csv_action(
            "external_id", "customer__external_id", "conversation_id", "channel", "author_role", "sent_at", "text"
        ),
    )

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        return messages_search(messages=queryset, text=search_term), False

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
