"""Reads of the alerts app: the alert queue, interventions, treated customers and the uplift report."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.db.models import Aggregate, Count, Exists, OuterRef, Q, QuerySet, Subquery, Sum

from alerts.models import (
    ALERT_QUEUE_ORDER,
    Alert,
    AlertRule,
    AlertStatus,
    AuditEntry,
    Intervention,
    InterventionStatus,
    Outcome,
)
from customers.models import Customer, Message

# Two-sided 95% normal quantile.
Z_95 = 1.959963984540054
# The reason of a coupon email that failed while being handed over: it may have arrived, so it counts as a contact.
DELIVERY_UNKNOWN = "delivery unknown"


def alert_rules(*, active: bool | None = None) -> QuerySet[AlertRule]:
    rules = AlertRule.objects.order_by("name")
    return rules if active is None else rules.filter(active=active)


def alerts_queue(
    *,
    status: str | None = None,
    risk_tier: str | None = None,
    segment: str | None = None,
    rule_id: int | None = None,
    customer_id: int | None = None,
    customer_external_id: str | None = None,
) -> QuerySet[Alert]:
    """Alerts for the CRM queue, most valuable first, with customer, rule and assignee joined."""
    alerts = Alert.objects.select_related("customer", "rule", "assignee").order_by(*ALERT_QUEUE_ORDER)
    if status:
        alerts = alerts.filter(status=status)
    if risk_tier:
        alerts = alerts.filter(risk_tier=risk_tier)
    if segment:
        alerts = alerts.filter(customer__segment=segment)
    if rule_id:
        alerts = alerts.filter(rule_id=rule_id)
    if customer_id:
        alerts = alerts.filter(customer_id=customer_id)
    if customer_external_id:
        alerts = alerts.filter(customer__external_id=customer_external_id)
    return alerts


def interventions_list(
    *,
    status: str | None = None,
    kind: str | None = None,
    alert_id: int | None = None,
    customer_id: int | None = None,
    customer_external_id: str | None = None,
) -> QuerySet[Intervention]:
    interventions = Intervention.objects.select_related("customer", "alert__rule").order_by("-created_at")
    if status:
        interventions = interventions.filter(status=status)
    if kind:
        interventions = interventions.filter(kind=kind)
    if alert_id:
        interventions = interventions.filter(alert_id=alert_id)
    if customer_id:
        interventions = interventions.filter(customer_id=customer_id)
    if customer_external_id:
        interventions = interventions.filter(customer__external_id=customer_external_id)
    return interventions


def customer_message_snippets(*, customer_id: int, limit: int = 5) -> QuerySet[Message]:
    """The customer's latest messages, for the alert queue (shown escaped and truncated)."""
    return Message.objects.filter(customer_id=customer_id).order_by("-sent_at")[:limit]


def audit_entries(*, alert_id: int | None = None) -> QuerySet[AuditEntry]:
    entries = AuditEntry.objects.select_related("rule", "alert", "intervention").order_by("-at", "-id")
    return entries.filter(alert_id=alert_id) if alert_id else entries


def treated_customer_ids(*, since: datetime | None = None, until: datetime | None = None) -> QuerySet[Intervention]:
    """Ids of customers who received a retention action (a sent coupon email or webhook) from ``since`` up to
    ``until`` (either open), distinct.

    Training uses it so that a model never learns that coupon recipients stay: it leaves out the customers
    treated by its as_of (``until``). Holdout customers are not treated.
    """
    sent = Intervention.objects.filter(status=InterventionStatus.SENT)
    if since is not None:
        sent = sent.filter(sent_at__gte=since)
    if until is not None:
        sent = sent.filter(sent_at__lte=until)
    return sent.order_by("customer_id").values_list("customer_id", flat=True).distinct()


def interventions_that_may_have_reached(*, customers: QuerySet[Customer]) -> QuerySet[Intervention]:
    """The retention actions (coupon emails, webhooks) sent to these customers, or that may have been: pending ones
    and failures whose delivery is unknown count too, as they do for the customer cooldown. Deleting them would
    delete the audit trail of what was done to whom, and the cooldown that keeps a customer from a second coupon."""
    return Intervention.objects.filter(may_have_reached_the_customer(), customer__in=customers)


def may_have_reached_the_customer() -> Q:
    """The interventions that reached their customer or may have: pending, sent, or failed while being handed over
    (delivery unknown: the server may have taken it)."""
    return Q(status__in=(InterventionStatus.PENDING, InterventionStatus.SENT)) | Q(
        status=InterventionStatus.FAILED, reason__startswith=DELIVERY_UNKNOWN
    )


@dataclass(frozen=True)
class UpliftReport:
    """Retention of treated against control customers for one rule, with a 95% confidence interval for the
    difference of the two proportions (Newcombe's hybrid score interval, :func:`_newcombe_interval`)."""

    treated: int
    treated_retained: int
    control: int
    control_retained: int
    coupons_cost: Decimal
    treated_rate: float | None
    control_rate: float | None
    difference: float | None
    ci_low: float | None
    ci_high: float | None
    number_needed_to_treat: float | None
    cost_per_customer_saved: Decimal | None


def _wilson_interval(successes: int, total: int) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion: inside [0, 1] and never a single point, even at 0 or n."""
    rate = successes / total
    centre = (rate + Z_95**2 / (2 * total)) / (1 + Z_95**2 / total)
    half = Z_95 * math.sqrt(rate * (1 - rate) / total + Z_95**2 / (4 * total**2)) / (1 + Z_95**2 / total)
    return max(0.0, centre - half), min(1.0, centre + half)


def _newcombe_interval(treated_retained: int, treated: int, control_retained: int, control: int) -> tuple[float, float]:
    """The 95% interval of the difference of two proportions by Newcombe's hybrid score method (his method 10),
    built from each group's Wilson interval. Unlike the normal approximation it stays inside [-1, 1] and keeps a
    width when a small group retained everyone or no one (Newcombe 1998, Statistics in Medicine 17:873)."""
    treated_rate, control_rate = treated_retained / treated, control_retained / control
    treated_low, treated_high = _wilson_interval(treated_retained, treated)
    control_low, control_high = _wilson_interval(control_retained, control)
    difference = treated_rate - control_rate
    low = difference - math.sqrt((treated_rate - treated_low) ** 2 + (control_high - control_rate) ** 2)
    high = difference + math.sqrt((treated_high - treated_rate) ** 2 + (control_rate - control_low) ** 2)
    return max(-1.0, low), min(1.0, high)


def uplift_note(report: UpliftReport, *, holdout_fraction: float) -> str:
    """What a reader must know beside the figures: why there is no difference yet (and whether there ever will be
    one: a rule that holds nobody out has no control group), or that the difference is not significant (its 95%
    interval includes 0, so the cost per customer saved is not established either); "" otherwise."""
    if report.difference is None:
        if report.control == 0 and not holdout_fraction:
            return "no control group (holdout fraction 0): uplift cannot be measured"
        if report.treated == 0 and report.control == 0:
            return "no outcomes yet for both groups"
        return f"no {'treated' if report.treated == 0 else 'control'} outcomes yet"
    if report.ci_low is not None and report.ci_high is not None and report.ci_low <= 0 <= report.ci_high:
        return "not significant: the 95% CI includes 0"
    return ""


def uplift_from_counts(
    *, treated: int, treated_retained: int, control: int, control_retained: int, coupons_cost: Decimal
) -> UpliftReport:
    """The uplift report from group counts. Rates and the difference are None where a group is empty; the number
    needed to treat (1 / difference) and the cost per customer saved only when the difference is positive."""
    treated_rate = treated_retained / treated if treated else None
    control_rate = control_retained / control if control else None
    difference = ci_low = ci_high = nnt = None
    cost_per_saved = None
    if treated_rate is not None and control_rate is not None:
        difference = treated_rate - control_rate
        ci_low, ci_high = _newcombe_interval(treated_retained, treated, control_retained, control)
        if difference > 0:
            nnt = 1 / difference
            cost_per_saved = (coupons_cost / Decimal(str(difference * treated))).quantize(Decimal("0.01"))
    return UpliftReport(
        treated=treated,
        treated_retained=treated_retained,
        control=control,
        control_retained=control_retained,
        coupons_cost=coupons_cost,
        treated_rate=treated_rate,
        control_rate=control_rate,
        difference=difference,
        ci_low=ci_low,
        ci_high=ci_high,
        number_needed_to_treat=nnt,
        cost_per_customer_saved=cost_per_saved,
    )


# The groups the uplift compares, as intention to treat: every alert that passed the dispatch gates (consent,
# cooldown, cap) and was meant to be acted on counts as treated, even where the email then bounced or the customer
# opted out before it went; the control group passed the same gates. Alerts suppressed at dispatch are in neither.
MEASURED_TREATED = (
    Q(status__in=(InterventionStatus.SENT, InterventionStatus.FAILED))
    | Q(status=InterventionStatus.SUPPRESSED, reason__startswith="at send time")
) & ~Q(outcome=Outcome.NOT_MEASURED)
MEASURED_CONTROL = Q(status=InterventionStatus.HOLDOUT) & ~Q(outcome=Outcome.NOT_MEASURED)


def _uplift_groups() -> dict[str, Aggregate]:
    """The group counts and coupon cost of an uplift report, over interventions whose outcome is known."""
    retained = Q(outcome=Outcome.RETAINED)
    return {
        "treated": Count("id", filter=MEASURED_TREATED),
        "treated_retained": Count("id", filter=MEASURED_TREATED & retained),
        "control": Count("id", filter=MEASURED_CONTROL),
        "control_retained": Count("id", filter=MEASURED_CONTROL & retained),
        "coupons_cost": Sum("coupon_cost", filter=Q(status=InterventionStatus.SENT)),
    }


def _uplift_report(groups: dict[str, object]) -> UpliftReport:
    return uplift_from_counts(
        treated=groups["treated"],
        treated_retained=groups["treated_retained"],
        control=groups["control"],
        control_retained=groups["control_retained"],
        coupons_cost=Decimal(groups["coupons_cost"] or 0),
    )


_KNOWN_OUTCOMES = (Outcome.RETAINED, Outcome.CHURNED)


def alert_rule_uplift(*, rule: AlertRule) -> UpliftReport:
    """The uplift report of a rule over its alerts whose outcome is known: one intervention per alert, the rule's
    own action (``by_rule``: a coupon sent by hand on a webhook rule's alert does not count the alert twice, and a
    later change of the rule's action keeps what it measured)."""
    known = Intervention.objects.filter(alert__rule=rule, by_rule=True, outcome__in=_KNOWN_OUTCOMES)
    return _uplift_report(known.aggregate(**_uplift_groups()))


def alert_rules_uplift(*, rules: Iterable[AlertRule]) -> dict[int, UpliftReport]:
    """``alert_rule_uplift`` of each of ``rules`` by rule id, in one grouped query for any number of rules."""
    rule_ids = [rule.pk for rule in rules]
    known = Intervention.objects.filter(alert__rule_id__in=rule_ids, by_rule=True, outcome__in=_KNOWN_OUTCOMES)
    by_rule = {
        row["alert__rule_id"]: row for row in known.order_by().values("alert__rule_id").annotate(**_uplift_groups())
    }
    empty = {"treated": 0, "treated_retained": 0, "control": 0, "control_retained": 0, "coupons_cost": None}
    return {rule_id: _uplift_report(by_rule.get(rule_id, empty)) for rule_id in rule_ids}


# Alerts that still wait for staff: not yet actioned, dismissed or resolved.
OPEN_ALERT_STATUSES = (AlertStatus.OPEN, AlertStatus.ACKNOWLEDGED)


def customers_annotate_open_alert(*, customers: QuerySet[Customer]) -> QuerySet[Customer]:
    """``customers`` annotated with ``open_alert_id``: their newest open or acknowledged alert, or None.

    A correlated subquery, so that a page of customers costs one query."""
    newest_open = Alert.objects.filter(customer=OuterRef("pk"), status__in=OPEN_ALERT_STATUSES).order_by(
        "-created_at", "-id"
    )
    return customers.annotate(open_alert_id=Subquery(newest_open.values("pk")[:1]))


def customer_open_alert(*, customer_id: int) -> Alert | None:
    """The customer's newest open or acknowledged alert, with its rule, or None."""
    return (
        Alert.objects.filter(customer_id=customer_id, status__in=OPEN_ALERT_STATUSES)
        .select_related("rule")
        .order_by("-created_at", "-id")
        .first()
    )


def customer_interventions(*, customer_id: int) -> QuerySet[Intervention]:
    """The customer's retention actions, newest first, with their alert and rule joined."""
    return Intervention.objects.filter(customer_id=customer_id).select_related("alert__rule").order_by("-created_at")


def alert_assignees() -> QuerySet:
    """The users an alert may be assigned to: active staff who may work alerts (superusers, and staff holding
    ``alerts.change_alert`` themselves or through a group). A view-only member of staff, or one who has left
    (inactive), is not offered and is refused: the alert would sit with somebody who cannot act on it."""
    from django.contrib.auth.models import Permission

    user_model = get_user_model()
    may_change = Permission.objects.filter(content_type__app_label="alerts", codename="change_alert")
    direct = may_change.filter(user=OuterRef("pk"))
    through_group = may_change.filter(group__user=OuterRef("pk"))
    return user_model.objects.filter(is_staff=True, is_active=True).filter(
        Q(is_superuser=True) | Exists(direct) | Exists(through_group)
    )
