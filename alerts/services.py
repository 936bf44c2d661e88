"""Writes of the alerts app: rules, alerts, interventions and their sends, outcomes, the audit log.

Exactly once, in four layers: an alert is unique per (customer, rule, period); an intervention is unique per
(alert, kind) and per idempotency key; send tasks are enqueued only after the transaction commits; and a send
holds a row lock on its intervention from the ``pending`` check until the ``sent`` update commits, so a
concurrent or redelivered send waits and then finds it sent. A worker killed mid-send drops its connection,
the database rolls the claim back and the redelivered task sends.

An email is retried only when it certainly did not leave: an error while connecting (before any message was
handed over) or a temporary (4xx) reply of the server to the message. An error while the message is being handed
over (a dropped connection, a timeout, the task's soft time limit) leaves its delivery unknown, and the
intervention fails with a reason saying so instead of risking a second coupon email; an error while closing the
connection after the server accepted the message counts as sent. Every attempt is recorded, and an intervention
re-enqueued after a lost task gets no more attempts in all than ``ALERTS_SEND_MAX_RETRIES`` + 1. The one window
left is a worker killed (SIGKILL) between the server accepting the message and our commit; the Message-ID is
derived from the idempotency key so the receiving side can drop such a duplicate.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import math
import re
import secrets
import smtplib
import time
import urllib.error
import urllib.request
from base64 import b32encode
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from django.conf import settings
from django.core import signing
from django.core.exceptions import ValidationError
from django.core.mail import EmailMultiAlternatives, get_connection
from django.core.mail.message import sanitize_address
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, Q, QuerySet, Sum
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from alerts import conf
from alerts.models import (
    ALERT_NOTES_MAX_LENGTH,
    MANUAL_RULE_NAME,
    ActionKind,
    Alert,
    AlertRule,
    AlertStatus,
    AuditEntry,
    DailySendCounter,
    IdempotencyRecord,
    Intervention,
    InterventionStatus,
    Outcome,
    TriggerKind,
)
from alerts.selectors import (
    DELIVERY_UNKNOWN,
    MEASURED_CONTROL,
    MEASURED_TREATED,
    customer_open_alert,
    may_have_reached_the_customer,
)
from customers.importers import text_as_number
from customers.models import Customer, Event, Order, OrderStatus
from customers.services import customer_opt_out
from predictions.models import ChurnScore, ScoringRun

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

logger = logging.getLogger(__name__)

EXAMPLE_RULE_NAME = "Top 5% by expected loss: coupon email"
UNSUBSCRIBE_SALT = "alerts.unsubscribe"
# Errors while connecting to the mail server worth another try later: nothing was handed over yet. OSError covers
# refused and reset connections, timeouts, DNS failures and TLS errors.
TRANSIENT_CONNECT_ERRORS: tuple[type[BaseException], ...] = (
    smtplib.SMTPServerDisconnected,
    smtplib.SMTPConnectError,
    OSError,
)

ALERT_TRANSITIONS: dict[str, frozenset[str]] = {
    AlertStatus.OPEN: frozenset(
        {AlertStatus.ACKNOWLEDGED, AlertStatus.ACTIONED, AlertStatus.DISMISSED, AlertStatus.RESOLVED}
    ),
    AlertStatus.ACKNOWLEDGED: frozenset(
        {AlertStatus.OPEN, AlertStatus.ACTIONED, AlertStatus.DISMISSED, AlertStatus.RESOLVED}
    ),
    AlertStatus.ACTIONED: frozenset({AlertStatus.RESOLVED}),
    AlertStatus.DISMISSED: frozenset({AlertStatus.OPEN}),
    AlertStatus.RESOLVED: frozenset(),
}


class TransientSendError(Exception):
    """A send failed for a reason that may pass (network, a 4xx SMTP reply, a 5xx webhook reply): retry later."""


class AlertTransitionError(ValueError):
    """The alert cannot move from its status to the one asked for."""


class IdempotencyKeyReused(ValueError):
    """The Idempotency-Key was already used for a different request."""


# --- Audit log -----------------------------------------------------------------------------------


def audit_record(
    *,
    actor: str,
    action: str,
    rule: AlertRule | None = None,
    alert: Alert | None = None,
    intervention: Intervention | None = None,
    details: dict[str, object] | None = None,
) -> AuditEntry:
    """Append one entry to the audit log (the only write the log ever gets). Email addresses in the details'
    text are masked: a mail server's refusal names the recipient, and the log outlives a deleted customer."""
    return AuditEntry.objects.create(
        actor=actor,
        action=action,
        rule=rule,
        alert=alert,
        intervention=intervention,
        details=_without_addresses(details or {}),
    )


# Anything with an @ between two runs of characters that cannot surround an address in an error text (any
# domain: an importer accepts ivan@почта.рф and a@b).
_ADDRESS = re.compile(r"[^\s'\"<>@(),;:\[\]{}]+@[^\s'\"<>@(),;:\[\]{}]+")


def _without_addresses(value: object) -> object:
    """``value`` (text, or lists and dicts of it) with email addresses masked."""
    if isinstance(value, str):
        return _ADDRESS.sub("<address>", value)
    if isinstance(value, dict):
        return {key: _without_addresses(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_without_addresses(item) for item in value]
    return value


def _json_safe(value: object) -> object:
    return json.loads(json.dumps(value, cls=DjangoJSONEncoder))


# --- Rules ---------------------------------------------------------------------------------------

RULE_FIELDS = frozenset(
    f.name for f in AlertRule._meta.get_fields() if f.concrete and f.name not in {"id", "created_at", "updated_at"}
)


# Rule fields whose values never go into the (append-only, staff-readable) audit log; it records that they changed.
SECRET_RULE_FIELDS = frozenset({"webhook_secret"})


def _without_secrets(fields: dict[str, object]) -> dict[str, object]:
    return {name: "(secret, not recorded)" if name in SECRET_RULE_FIELDS else v for name, v in fields.items()}


def alert_rule_create(*, actor: str, **fields: object) -> AlertRule:
    """Create a rule after full validation (model fields and constraints)."""
    unknown = set(fields) - RULE_FIELDS
    if unknown:
        raise ValueError(f"unknown rule fields: {sorted(unknown)}")
    with _name_taken_as_validation_error():
        with transaction.atomic():
            rule = AlertRule(**fields)
            rule.full_clean()
            rule.save()
            audit_record(actor=actor, action="rule_created", rule=rule, details=_json_safe(_without_secrets(fields)))
    return rule


@contextmanager
def _name_taken_as_validation_error() -> Iterator[None]:
    """Two requests that both passed validation with the same new name: the second one's insert breaks the
    unique constraint; it becomes the same 400 that validation gives, not a 500."""
    try:
        yield
    except IntegrityError as exc:
        if "name" not in str(exc) or "alertrule" not in str(exc).lower():
            raise
        raise ValidationError({"name": ["an alert rule with this name already exists"]}) from exc


def alert_rule_update(*, rule: AlertRule, actor: str, **changes: object) -> AlertRule:
    unknown = set(changes) - RULE_FIELDS
    if unknown:
        raise ValueError(f"unknown rule fields: {sorted(unknown)}")
    with _name_taken_as_validation_error(), transaction.atomic():
        locked = AlertRule.objects.select_for_update().get(pk=rule.pk)
        before = {name: getattr(locked, name) for name in changes}
        for name, value in changes.items():
            setattr(locked, name, value)
        locked.full_clean()
        locked.save()
        audit_record(
            actor=actor,
            action="rule_updated",
            rule=locked,
            details=_json_safe({"before": _without_secrets(before), "after": _without_secrets(changes)}),
        )
    return locked


def alert_rule_ensure_example() -> AlertRule:
    """The demo's active rule: the top 5% of customers by expected loss get a coupon email, 10% held out.

    Idempotent: an existing rule of that name is kept as it is (staff may have edited it)."""
    with transaction.atomic():
        rule, created = AlertRule.objects.get_or_create(
            name=EXAMPLE_RULE_NAME,
            defaults={
                "description": "Created by churn_generate so that the demo acts on its scores.",
                "active": True,
                "trigger": TriggerKind.TOP_PERCENT,
                "top_percent": 5.0,
                "action": ActionKind.COUPON_EMAIL,
                "coupon_discount_percent": 15,
                "coupon_valid_days": 14,
                "coupon_cost": Decimal("10.00"),
                "holdout_fraction": 0.10,
                "cooldown_days": 30,
                "horizon_days": 60,
            },
        )
        if created:
            audit_record(actor="system:churn_generate", action="rule_created", rule=rule, details={"example": True})
    return rule


# --- Deterministic helpers -----------------------------------------------------------------------


def holdout_assigned(*, customer_id: int, rule_id: int, fraction: float) -> bool:
    """Whether the customer is in the rule's control group: a hash of (customer, rule), so the same pair always
    lands in the same group and about ``fraction`` of customers do."""
    digest = hashlib.sha256(f"churnsite-holdout:{rule_id}:{customer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def alert_period_start(*, as_of: datetime, period_days: int) -> date:
    """The first day of the period containing ``as_of``: periods are ``period_days`` long from day 0 (0001-01-01)."""
    days = max(int(period_days), 1)
    ordinal = as_of.date().toordinal()
    return date.fromordinal(ordinal - (ordinal - 1) % days)


def coupon_code_new() -> str:
    """An unguessable coupon code: 80 random bits as 16 base32 characters, grouped by four."""
    raw = b32encode(secrets.token_bytes(10)).decode()
    return "-".join(raw[i : i + 4] for i in range(0, 16, 4))


def unsubscribe_token(*, customer_id: int) -> str:
    return signing.dumps({"customer": customer_id}, salt=UNSUBSCRIBE_SALT)


def unsubscribe_url(*, customer_id: int) -> str:
    return conf.site_url() + reverse("alerts:unsubscribe", args=[unsubscribe_token(customer_id=customer_id)])


def unsubscribe_customer(*, token: str) -> Customer:
    """Opt the customer named by a signed unsubscribe token out of marketing (idempotent).

    Raises:
        signing.BadSignature: the token was not made by us (or was altered).
        Customer.DoesNotExist: the customer is gone.
    """
    payload = signing.loads(token, salt=UNSUBSCRIBE_SALT)
    with transaction.atomic():
        customer = Customer.objects.get(pk=int(payload["customer"]))
        already = customer.opted_out_at is not None
        customer = customer_opt_out(customer=customer)
        if not already:
            audit_record(
                actor="customer:unsubscribe-link", action="customer_opted_out", details={"customer_id": customer.pk}
            )
    return customer


# --- Applying rules to scores --------------------------------------------------------------------


@dataclass(frozen=True)
class RuleApplication:
    """What applying one rule did."""

    rule: str
    eligible: int
    alerts_created: int
    interventions: dict[str, int] = field(default_factory=dict)


# Alert.customer_value and expected_loss hold 14 digits with 2 decimals.
_LARGEST_VALUE = Decimal("999999999999.99")


def _rule_customer_values(rule: AlertRule, rows: list[dict[str, object]]) -> dict[int, Decimal]:
    """Each row's customer's value under ``rule``: its ``value_attribute`` when it names one (rows carry
    ``customer__attributes`` then), else completed order amounts in its value window (:func:`_customer_values`)."""
    if not rule.value_attribute:
        return _customer_values(rows, rule.value_window_days)
    return {row["customer_id"]: _attribute_value(row.get("customer__attributes"), rule.value_attribute) for row in rows}


def _attribute_value(attributes: object, name: str) -> Decimal:
    """The attribute ``name`` as a customer value: a positive finite number (or text the importer would store as
    one) to the cent; anything else (missing, text, a boolean, negative) is 0, as a customer without orders is."""
    value = attributes.get(name) if isinstance(attributes, dict) else None
    number = _comparable(value)
    if not isinstance(number, Decimal) or not number.is_finite() or number <= 0:
        return Decimal(0)
    return min(number, _LARGEST_VALUE).quantize(Decimal("0.01"))


def _customer_values(rows: list[dict[str, object]], window_days: int) -> dict[int, Decimal]:
    """Completed order amounts of each customer in the ``window_days`` before their score's as_of."""
    by_as_of: dict[datetime, list[int]] = defaultdict(list)
    for row in rows:
        by_as_of[row["as_of"]].append(row["customer_id"])
    values: dict[int, Decimal] = {}
    for as_of, customer_ids in by_as_of.items():
        for start in range(0, len(customer_ids), 5000):
            totals = (
                Order.objects.filter(
                    customer_id__in=customer_ids[start : start + 5000],
                    status=OrderStatus.COMPLETED,
                    placed_at__lte=as_of,
                    placed_at__gt=as_of - timedelta(days=window_days),
                )
                .values("customer_id")
                .annotate(total=Sum("amount"))
            )
            values.update({row["customer_id"]: row["total"] or Decimal(0) for row in totals})
    return values


def _comparable(value: object) -> object:
    """A value as attribute filters compare it: a number, or text the importer would store as a number, as a
    Decimal (the CSV's "1" and the number 1 the importer made of it are equal); a boolean stays a boolean (True is
    not 1); other text as it is: "007" and "02134" are codes the importer keeps as text, not 7 and 2134."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return Decimal(str(value)) if math.isfinite(value) else value
    if isinstance(value, str):
        number = text_as_number(value.strip())
        return value if number is None else Decimal(str(number)) if isinstance(number, float) else Decimal(number)
    return value


def _attribute_matches(actual: object, expected: object) -> bool:
    if isinstance(actual, bool) or isinstance(expected, bool):
        return type(actual) is type(expected) and actual == expected
    return _comparable(actual) == _comparable(expected)


def _matches_filter(rule: AlertRule, row: dict[str, object]) -> bool:
    if rule.segments and row["customer__segment"] not in rule.segments:
        return False
    attributes = row.get("customer__attributes")
    if not isinstance(attributes, dict):  # the admin's JSON field accepts any JSON: such a customer matches no key
        attributes = {}
    missing = object()
    for key, expected in (rule.attribute_filters or {}).items():
        actual = attributes.get(key, missing)
        if actual is missing or not _attribute_matches(actual, expected):
            return False
    return rule.min_customer_value is None or row["customer_value"] >= rule.min_customer_value


def _triggered(rule: AlertRule, eligible: list[dict[str, object]]) -> list[dict[str, object]]:
    """The eligible scores the trigger selects, highest expected loss first."""
    ranked = sorted(eligible, key=lambda r: (-r["expected_loss"], -r["probability"], r["customer_id"]))
    if rule.trigger == TriggerKind.TOP_N:
        return ranked[: rule.top_n or 0]
    if rule.trigger == TriggerKind.TOP_PERCENT:
        # In decimals: 250 customers at 64.4% is 161 exactly, where floats give 161.00000000000003 and one more.
        return ranked[: math.ceil(len(ranked) * Decimal(str(rule.top_percent or 0)) / 100)]
    thresholds = rule.segment_thresholds or {}
    return [r for r in ranked if r["probability"] >= float(thresholds.get(r["customer__segment"], rule.threshold))]


def _score_factors(score_ids: list[int]) -> dict[int, object]:
    """The top factors of these scores, by score id (5,000 ids a query)."""
    factors: dict[int, object] = {}
    for start in range(0, len(score_ids), 5000):
        factors.update(
            ChurnScore.objects.filter(pk__in=score_ids[start : start + 5000])
            .order_by()
            .values_list("pk", "top_factors")
        )
    return factors


def _locked_counter(day: date) -> DailySendCounter:
    """Today's send counter (``day``: the site's local date, as the dashboard counts days), locked until the
    transaction ends: every dispatch passes here first."""
    DailySendCounter.objects.get_or_create(day=day)
    return DailySendCounter.objects.select_for_update().get(day=day)


def alert_rule_apply(*, rule: AlertRule, scores: QuerySet[ChurnScore], actor: str) -> RuleApplication:
    """Turn ``scores`` into this rule's alerts and dispatch its action for each new one, in one transaction.

    Idempotent: a customer already alerted by the rule within its cooldown (or in the same period) gets no new
    alert, so any number of scoring runs gives one alert per customer, rule and period.
    """
    # Every score is ranked, so every row is read, but only what the ranking, the filter and the gates need: the
    # factors (most of a row's size) are read below for the scores alerted on, and the attributes only when the rule
    # filters on them.
    columns = [
        "id", "customer_id", "probability", "risk_tier", "as_of", "customer__segment", "customer__marketing_consent",
        "customer__opted_out_at", "customer__email",
    ]  # fmt: skip
    if rule.attribute_filters or rule.value_attribute:
        columns.append("customer__attributes")
    rows = list(scores.order_by().values(*columns))
    values = _rule_customer_values(rule, rows)
    for row in rows:
        row["customer_value"] = values.get(row["customer_id"], Decimal(0))
        row["expected_loss"] = (Decimal(str(row["probability"])) * row["customer_value"]).quantize(Decimal("0.01"))
    eligible = [row for row in rows if _matches_filter(rule, row)]
    chosen = _triggered(rule, eligible)

    with transaction.atomic():
        counter = _locked_counter(timezone.localdate())
        # The day's counter serialises applications within one local day only: across midnight two of them hold
        # different counters. The rule's row serialises every application of this rule, so the second one always
        # sees the first one's alerts below.
        AlertRule.objects.select_for_update().filter(pk=rule.pk).first()
        if chosen:
            oldest = min(row["as_of"] for row in chosen) - timedelta(days=rule.cooldown_days)
            last_alerted: dict[int, datetime] = {}
            for customer_id, as_of in Alert.objects.filter(rule=rule, as_of__gt=oldest).values_list(
                "customer_id", "as_of"
            ):
                last_alerted[customer_id] = max(as_of, last_alerted.get(customer_id, as_of))
            cooldown = timedelta(days=rule.cooldown_days)
            chosen = [
                row
                for row in chosen
                if row["customer_id"] not in last_alerted or last_alerted[row["customer_id"]] <= row["as_of"] - cooldown
            ]
        # One alert per customer, rule and period: drop those the period already has (the unique constraint backs
        # this), and within one batch keep a customer's first row (the highest expected loss).
        for row in chosen:
            row["period_start"] = alert_period_start(as_of=row["as_of"], period_days=rule.cooldown_days)
        taken = set(
            Alert.objects.filter(rule=rule, period_start__in={row["period_start"] for row in chosen}).values_list(
                "customer_id", "period_start"
            )
        )
        chosen = [row for row in chosen if (row["customer_id"], row["period_start"]) not in taken]
        seen: set[int] = set()
        chosen = [row for row in chosen if not (row["customer_id"] in seen or seen.add(row["customer_id"]))]
        max_treated = None
        if rule.budget is not None and rule.action != ActionKind.NONE and rule.coupon_cost > 0:
            max_treated = int(rule.budget // rule.coupon_cost)
        unreachable: set[int] = set()
        if max_treated is not None and rule.action == ActionKind.COUPON_EMAIL:
            # Customers no coupon can reach (no consent, opted out, no address, contacted within the cooldown)
            # are alerted but spend no budget: it pays for coupons that can go out.
            unreachable = {
                row["customer_id"]
                for row in chosen
                if not row["customer__marketing_consent"] or row["customer__opted_out_at"] or not row["customer__email"]
            } | _recently_contacted({row["customer_id"] for row in chosen})
        alerted: list[tuple[dict[str, object], bool]] = []
        treated = 0
        for row in chosen:
            # The budget cuts the ranking where its money ends, for the control group too, so both groups come
            # from the same stretch of the ranking.
            if max_treated is not None and treated >= max_treated:
                break
            holdout = holdout_assigned(customer_id=row["customer_id"], rule_id=rule.pk, fraction=rule.holdout_fraction)
            treated += 0 if holdout or row["customer_id"] in unreachable else 1
            alerted.append((row, holdout))
        factors = _score_factors([row["id"] for row, _ in alerted])
        new_alerts: list[Alert] = []
        for row, holdout in alerted:
            new_alerts.append(
                Alert(
                    customer_id=row["customer_id"],
                    rule=rule,
                    score_id=row["id"],
                    period_start=row["period_start"],
                    as_of=row["as_of"],
                    probability=row["probability"],
                    risk_tier=row["risk_tier"],
                    customer_value=row["customer_value"],
                    expected_loss=row["expected_loss"],
                    top_factors=factors.get(row["id"]) or [],
                    holdout=holdout,
                )
            )
        created = Alert.objects.bulk_create(new_alerts, batch_size=2000)
        interventions: list[Intervention] = []
        if rule.action != ActionKind.NONE and created:
            interventions = _dispatch_locked(
                alerts=created, rule=rule, kind=rule.action, counter=counter, actor=actor, audit=False
            )
        # One entry per new alert, naming the action it got: a burst writes one audit row per alert, not two.
        action_of = {intervention.alert_id: intervention for intervention in interventions}
        entries = []
        for alert in created:
            details: dict[str, object] = {
                "probability": alert.probability,
                "expected_loss": str(alert.expected_loss),
                "holdout": alert.holdout,
            }
            intervention = action_of.get(alert.pk)
            if intervention is not None:
                details.update(kind=intervention.kind, intervention=intervention.status, reason=intervention.reason)
            entries.append(
                AuditEntry(
                    actor=actor,
                    action="alert_created",
                    rule=rule,
                    alert=alert,
                    intervention=intervention,
                    details=details,
                )  # fmt: skip
            )
        AuditEntry.objects.bulk_create(entries, batch_size=2000)
    # Read back after the commit: with eager Celery (the embedded default) the sends have happened by now.
    counts: dict[str, int] = defaultdict(int)
    pks = [intervention.pk for intervention in interventions]
    for start in range(0, len(pks), 5000):
        for status in Intervention.objects.filter(pk__in=pks[start : start + 5000]).values_list("status", flat=True):
            counts[str(status)] += 1
    logger.info(
        "rule %s: %d eligible, %d alerts, interventions %s", rule.name, len(eligible), len(created), dict(counts)
    )
    return RuleApplication(
        rule=rule.name, eligible=len(eligible), alerts_created=len(created), interventions=dict(counts)
    )


def alerts_apply_rules(
    *, actor: str, scoring_run_id: int | None = None, rule_name: str | None = None
) -> list[RuleApplication]:
    """Apply the active rules (or the one named) to a scoring run's scores, or to each customer's latest score.

    A scoring run of a past date (its as_of more than ``ALERTS_MAX_SCORE_AGE_DAYS`` before it ran: a backfill) raises
    no alert: its scores say how customers looked then, not what to do today (an audit entry says so); for the same
    reason latest scores older than that are left out.

    A rule whose settings do not validate (saved before validation existed, or written to the database directly)
    is skipped with an audit entry naming the field, and the other rules still run; a rule asked for by name
    raises the ``ValidationError`` instead.
    """
    from predictions.selectors import latest_scores

    rules = AlertRule.objects.filter(active=True).order_by("name")
    if rule_name is not None:
        rules = rules.filter(name=rule_name)
        if not rules.exists():
            raise ValueError(f"no active rule named {rule_name!r}")
    if scoring_run_id:
        # The run's scores are every score of its model at its as_of, also those an earlier run at the same as_of
        # stored (a rerun after a failed run skips the customers already scored, so they are not linked to it).
        run = ScoringRun.objects.get(pk=scoring_run_id)
        max_age = conf.max_score_age_days()
        if max_age is not None and run.created_at - run.as_of > timedelta(days=max_age):
            # A backfill (scores of a past date): history, not today's risk; acting on it would send coupons
            # today for how customers looked then.
            logger.info("scoring run %s is a backfill at %s: no alert rule applies", run.pk, run.as_of)
            audit_record(
                actor=actor,
                action="rules_not_applied",
                details={"scoring_run": run.pk, "as_of": run.as_of.isoformat(), "max_score_age_days": max_age},
            )
            return []
        scores = ChurnScore.objects.filter(model_version_id=run.model_version_id, as_of=run.as_of)
    else:
        scores = latest_scores()
        max_age = conf.max_score_age_days()
        if max_age is not None:  # a customer's newest score from long ago is history, not today's risk
            scores = scores.filter(as_of__gte=timezone.now() - timedelta(days=max_age))
    applied = []
    for rule in rules:
        try:
            rule.clean()
        except ValidationError as exc:
            if rule_name is not None:
                raise
            logger.error("alert rule %r skipped: %s", rule.name, exc.message_dict)
            audit_record(actor=actor, action="rule_skipped", rule=rule, details={"invalid": exc.message_dict})
            continue
        applied.append(alert_rule_apply(rule=rule, scores=scores, actor=actor))
    return applied


# --- Dispatch: interventions under the daily counter lock ----------------------------------------


def _recently_contacted(customer_ids: set[int]) -> set[int]:
    """Those of ``customer_ids`` who got a coupon email within ALERTS_CUSTOMER_COOLDOWN_DAYS, or may have: one
    pending, sent, or failed with its delivery unknown (the server may have taken it)."""
    if not customer_ids:
        return set()
    cutoff = timezone.now() - timedelta(days=conf.customer_cooldown_days())
    recent = Intervention.objects.filter(
        may_have_reached_the_customer(),
        kind=ActionKind.COUPON_EMAIL,
        customer_id__in=list(customer_ids),
        created_at__gte=cutoff,
    )
    return set(recent.values_list("customer_id", flat=True))


def _enqueue(intervention_id: int, kind: str) -> None:
    from alerts.tasks import deliver_webhook_task, send_coupon_email_task

    task = send_coupon_email_task if kind == ActionKind.COUPON_EMAIL else deliver_webhook_task
    task.delay(intervention_id)


def _dispatch_locked(
    *, alerts: list[Alert], rule: AlertRule, kind: str, counter: DailySendCounter, actor: str, audit: bool = True
) -> list[Intervention]:
    """Create one intervention per alert (the existing one where there is one) and reserve email slots.

    The caller holds ``counter`` locked, which serialises every dispatch: the cooldown and cap checks below
    therefore see every reservation made before them, however many dispatches run at once.
    """
    # The customers' rows are locked first (in one order, so dispatches cannot deadlock): the send counter is a row
    # per day, so two dispatches on either side of midnight hold different counters, but never the same customer
    # at once, and the second then sees the first's interventions, for these alerts and in its cooldown check.
    locked = {
        c.pk: c
        for c in Customer.objects.select_for_update().filter(pk__in={a.customer_id for a in alerts}).order_by("pk")
    }
    existing = {i.alert_id: i for i in Intervention.objects.filter(alert__in=[a.pk for a in alerts], kind=kind)}
    todo = [alert for alert in alerts if alert.pk not in existing]
    customers = {pk: locked[pk] for pk in {a.customer_id for a in todo}}
    in_control_group = _control_group_customers(customers, exclude_alerts=[a.pk for a in todo])
    in_treated_window = _treated_window_customers(customers, rule=rule, exclude_alerts=[a.pk for a in todo])
    recently_contacted: set[int] = set()
    cap = conf.daily_send_cap()
    if kind == ActionKind.COUPON_EMAIL and todo:
        recently_contacted = _recently_contacted(set(customers))
    valid_until = timezone.localdate() + timedelta(days=rule.coupon_valid_days)
    reserved_before = counter.reserved
    new: list[Intervention] = []
    # Highest expected loss first, so the cap cuts the least valuable. The control group passes the same gates
    # as the treated (consent, cooldown, the cap's cut) and only then stays uncontacted: both groups stay alike.
    for alert in sorted(todo, key=lambda a: (-a.expected_loss, a.pk)):
        customer = customers[alert.customer_id]
        status, reason = InterventionStatus.PENDING, ""
        if customer.pk in in_control_group:
            # In another rule's control group (its outcome window open): acting now would spoil that measurement.
            # Its own control group leaves such a customer out too, so that both groups pass the same gates.
            status, reason = (
                InterventionStatus.SUPPRESSED,
                f"control group of rule {in_control_group[customer.pk].rule_name!r}",
            )
        elif kind == ActionKind.COUPON_EMAIL:
            if customer.opted_out_at is not None:
                status, reason = InterventionStatus.SUPPRESSED, "opted out"
            elif not customer.marketing_consent:
                status, reason = InterventionStatus.SUPPRESSED, "no marketing consent"
            elif not customer.email:
                status, reason = InterventionStatus.SUPPRESSED, "no email address"
            elif customer.pk in recently_contacted:
                status, reason = InterventionStatus.SUPPRESSED, "customer contacted within the cooldown"
            elif counter.reserved >= cap:
                status, reason = InterventionStatus.SUPPRESSED, "daily send cap reached"
            elif alert.holdout:
                status, reason = InterventionStatus.HOLDOUT, "control group"
            else:
                counter.reserved += 1
                recently_contacted.add(customer.pk)
        elif alert.holdout:
            status, reason = InterventionStatus.HOLDOUT, "control group"
        if status == InterventionStatus.HOLDOUT:
            # A later alert of this customer in the same call (the bulk action's several periods of one rule) finds
            # this control group open, as it would one alert at a time: one control outcome per window, not two.
            in_control_group[customer.pk] = _ControlGroup(
                rule_name=rule.name, until=timezone.now() + timedelta(days=rule.horizon_days)
            )
        coupon = kind == ActionKind.COUPON_EMAIL and status == InterventionStatus.PENDING
        # A repeat of this rule while the customer's treated outcome window with it is open goes out, but is not a
        # second treated outcome: the control group's repeats are left out, so counting it would bias the uplift.
        repeat = customer.pk in in_treated_window and status != InterventionStatus.SUPPRESSED
        new.append(
            Intervention(
                alert=alert,
                customer_id=alert.customer_id,
                kind=kind,
                status=status,
                reason=reason,
                coupon_code=coupon_code_new() if coupon else None,
                coupon_discount_percent=rule.coupon_discount_percent if coupon else None,
                coupon_valid_until=valid_until if coupon else None,
                coupon_cost=rule.coupon_cost if coupon else Decimal(0),
                idempotency_key=f"{kind}:rule-{rule.pk}:customer-{alert.customer_id}:{alert.period_start.isoformat()}",
                outcome=Outcome.NOT_MEASURED if repeat else Outcome.UNKNOWN,
                by_rule=kind == rule.action,
            )
        )
    created = Intervention.objects.bulk_create(new, batch_size=2000)
    if counter.reserved != reserved_before:
        counter.save(update_fields=["reserved"])
    if audit:
        AuditEntry.objects.bulk_create(
            [
                AuditEntry(
                    actor=actor,
                    action=f"intervention_{intervention.status}",
                    rule=rule,
                    alert=intervention.alert,
                    intervention=intervention,
                    details={"kind": kind, "reason": intervention.reason},
                )
                for intervention in created
            ],
            batch_size=2000,
        )
    for intervention in created:
        if intervention.status == InterventionStatus.PENDING:
            transaction.on_commit(lambda pk=intervention.pk: _enqueue(pk, kind), robust=True)
    return list(existing.values()) + created


def interventions_requeue_pending(*, older_than_minutes: int = 15, limit: int = 5000) -> int:
    """Enqueue again the sends of interventions pending for longer than ``older_than_minutes`` (their task was lost,
    for example with the broker down at commit time). Safe to repeat: sends claim their row and happen once."""
    cutoff = timezone.now() - timedelta(minutes=older_than_minutes)
    stale = list(
        Intervention.objects.filter(status=InterventionStatus.PENDING, updated_at__lt=cutoff)
        .order_by("pk")
        .values_list("pk", "kind")[:limit]
    )
    for pk, kind in stale:
        _enqueue(pk, kind)
    if stale:
        logger.warning("re-enqueued %d pending interventions", len(stale))
    return len(stale)


def alert_send_coupon(*, alert: Alert, actor: str) -> Intervention:
    """Send this alert's customer a coupon email by hand (admin, API). Idempotent: one coupon intervention per
    alert; holdout, consent, the customer cooldown and the daily cap apply as for rules.

    Raises:
        CouponNotAllowed: the alert is dismissed, resolved or already actioned otherwise, and has no coupon yet.
    """
    with transaction.atomic():
        counter = _locked_counter(timezone.localdate())
        # The customer before the alert, as the customer page's coupon takes them (its intervention insert waits for
        # the alert): across midnight the day counters differ and the other order could deadlock.
        Customer.objects.select_for_update().filter(pk=alert.customer_id).first()
        alert = Alert.objects.select_for_update(of=("self",)).select_related("rule").get(pk=alert.pk)
        existing = Intervention.objects.filter(alert=alert, kind=ActionKind.COUPON_EMAIL).first()
        if existing is not None:
            return existing
        if alert.status not in (AlertStatus.OPEN, AlertStatus.ACKNOWLEDGED):
            raise CouponNotAllowed(
                f"alert {alert.pk} is {alert.status}: only open or acknowledged alerts get a coupon (reopen it first)"
            )
        (intervention,) = _dispatch_locked(
            alerts=[alert], rule=alert.rule, kind=ActionKind.COUPON_EMAIL, counter=counter, actor=actor
        )
    return intervention


# --- Coupons sent by staff from the customer page ------------------------------------------------


class CouponNotAllowed(ValueError):
    """A coupon may not be sent to this customer now (for example: they are in a rule's control group)."""


def alert_rule_ensure_manual() -> AlertRule:
    """The rule that a coupon sent by staff to a customer without an open alert is filed under.

    Never applied to scores: it is inactive, and its threshold of 1 would alert nobody if staff activated it.
    No holdout (staff chose this customer; there is no random control group to keep), and a one-day period, so
    one customer gets at most one manual alert, and so one manual coupon intervention, per day. Staff may edit
    its coupon fields (discount, validity, cost) in the admin. Idempotent."""
    with transaction.atomic():
        rule, created = AlertRule.objects.get_or_create(
            name=MANUAL_RULE_NAME,
            defaults={
                "description": "Coupons sent by hand from a customer's admin page when no alert was open. "
                "Kept inactive: it is never applied to scoring runs.",
                "active": False,
                "trigger": TriggerKind.PROBABILITY,
                "threshold": 1.0,
                "action": ActionKind.COUPON_EMAIL,
                "holdout_fraction": 0.0,
                "cooldown_days": 1,
            },
        )
        if created:
            audit_record(actor="system:manual-coupon", action="rule_created", rule=rule, details={"manual": True})
    return rule


@dataclass(frozen=True)
class _ControlGroup:
    rule_name: str
    until: datetime  # the end of the rule's outcome window for this customer


def _control_group_customers(
    customer_ids: Iterable[int], *, exclude_alerts: Iterable[int] = ()
) -> dict[int, _ControlGroup]:
    """The customers in a rule's control group whose outcome window is still open (other than through
    ``exclude_alerts``, the alerts being dispatched): contacting them now would spoil that rule's uplift measurement."""
    now = timezone.now()
    held = (
        Intervention.objects.filter(customer_id__in=list(customer_ids), status=InterventionStatus.HOLDOUT)
        .exclude(alert_id__in=list(exclude_alerts))
        .order_by("created_at")  # the newest window wins below
        .values_list("customer_id", "created_at", "alert__rule__horizon_days", "alert__rule__name")
    )
    found: dict[int, _ControlGroup] = {}
    for customer_id, dispatched, horizon_days, rule_name in held:
        until = dispatched + timedelta(days=horizon_days)
        if until > now:
            found[customer_id] = _ControlGroup(rule_name=rule_name, until=until)
    return found


def _treated_window_customers(
    customer_ids: Iterable[int], *, rule: AlertRule, exclude_alerts: Iterable[int] = ()
) -> set[int]:
    """The customers treated by ``rule`` (a measured action) whose outcome window with it is still open."""
    opened_after = timezone.now() - timedelta(days=rule.horizon_days)
    return set(
        Intervention.objects.filter(
            MEASURED_TREATED,
            customer_id__in=list(customer_ids),
            alert__rule=rule,
            created_at__gt=opened_after,
        )
        .exclude(alert_id__in=list(exclude_alerts))
        .values_list("customer_id", flat=True)
    )


def customer_send_coupon(
    *, customer: Customer, actor: str, user: AbstractBaseUser | None = None, request_key: str = ""
) -> Intervention:
    """Send the customer a coupon email by hand (the customer's admin page); returns the coupon intervention,
    read after the commit (so ``sent`` where the email went out at once).

    With an open (or acknowledged) alert, this is ``alert_send_coupon`` on the newest one: its holdout flag,
    consent, the customer cooldown and the daily cap apply, and the alert gets at most one coupon. Without one,
    a manual alert is filed under the manual rule (``alert_rule_ensure_manual``), carrying the newest score,
    and the same dispatch applies to it.

    Exactly once per click: ``request_key`` (made when the form was shown) and ``user`` go through
    ``idempotent_request``, so the same form submitted twice runs once and the second gets the first's
    intervention. Apart from that, every dispatch first locks today's send counter, so concurrent requests run
    one after the other; one coupon per alert is a database constraint; and a new click after a coupon went out
    is suppressed by the customer cooldown.

    Raises:
        CouponNotAllowed: no open alert, and the customer is in a rule's control group whose outcome window is
            still open (a manual coupon would spoil the uplift measurement). Nothing is written.
        IdempotencyKeyReused: ``request_key`` was used by this user for another customer.
    """
    if request_key:
        if user is None:
            raise ValueError("a request_key needs the user who sent it")
        stored = idempotent_request(
            user=user,
            key=f"customer-send-coupon:{request_key}",
            method="POST",
            path=f"customers/{customer.pk}/send-coupon",
            body=b"",
            handler=lambda: (200, {"intervention": _customer_send_coupon(customer=customer, actor=actor).pk}),
        )
        intervention_id = int(stored.body["intervention"])  # type: ignore[index]
    else:
        intervention_id = _customer_send_coupon(customer=customer, actor=actor).pk
    return Intervention.objects.select_related("alert__rule").get(pk=intervention_id)


def _customer_send_coupon(*, customer: Customer, actor: str) -> Intervention:
    with transaction.atomic():
        counter = _locked_counter(timezone.localdate())
        # Two clicks on either side of midnight hold different day counters: the customer's row serialises them,
        # so the second finds the alert and the coupon the first made.
        if Customer.objects.select_for_update().filter(pk=customer.pk).first() is None:
            # Erased since the page was shown (``customers_erase`` locks the row as it deletes it): an alert and a
            # coupon for them would fail on their foreign key at the commit.
            raise CouponNotAllowed(f"customer {customer.external_id} no longer exists: no coupon")
        alert = customer_open_alert(customer_id=customer.pk)
        if alert is None:
            if (held := _control_group_customers([customer.pk]).get(customer.pk)) is not None:
                raise CouponNotAllowed(
                    f"customer {customer.external_id} is in the control group of rule {held.rule_name!r} "
                    f"until {timezone.localtime(held.until):%Y-%m-%d}: no coupon, so that the rule's uplift stays measurable"
                )
            alert = _manual_alert(customer=customer, now=timezone.now(), actor=actor)
        (intervention,) = _dispatch_locked(
            alerts=[alert], rule=alert.rule, kind=ActionKind.COUPON_EMAIL, counter=counter, actor=actor
        )
    return intervention


def _manual_alert(*, customer: Customer, now: datetime, actor: str) -> Alert:
    """Today's manual alert of the customer, created (with the newest score's figures) if there is none yet.
    The caller holds the send counter and the customer's row locked, so two requests cannot both create one."""
    rule = alert_rule_ensure_manual()
    period_start = alert_period_start(as_of=now, period_days=rule.cooldown_days)
    existing = Alert.objects.select_related("rule").filter(customer=customer, rule=rule, period_start=period_start)
    if (alert := existing.first()) is not None:
        return alert
    score = ChurnScore.objects.filter(customer=customer).order_by("-as_of", "-created_at", "-id").first()
    probability = score.probability if score else 0.0
    value = _customer_values([{"as_of": now, "customer_id": customer.pk}], rule.value_window_days).get(
        customer.pk, Decimal(0)
    )
    alert = Alert.objects.create(
        customer=customer,
        rule=rule,
        score=score,
        period_start=period_start,
        as_of=now,
        probability=probability,
        risk_tier=score.risk_tier if score else "",
        customer_value=value,
        expected_loss=(Decimal(str(probability)) * value).quantize(Decimal("0.01")),
        top_factors=score.top_factors if score else [],
        holdout=False,
    )
    audit_record(
        actor=actor,
        action="alert_created",
        rule=rule,
        alert=alert,
        details={"manual": True, "probability": probability, "score": score.pk if score else None},
    )
    return alert


# --- Alert changes by staff ----------------------------------------------------------------------


def alert_transition(*, alert: Alert, status: str, actor: str, note: str = "") -> Alert:
    """Move an alert to ``status``, appending ``note`` to its notes. Idempotent: asking for the status it has
    changes nothing.

    Raises:
        AlertTransitionError: the alert cannot go from its status to ``status``.
        ValidationError: (on ``note``) the note would take the notes past ``ALERT_NOTES_MAX_LENGTH``; nothing
            changes, so that the notes stay savable through the API and the admin.
    """
    if status not in AlertStatus.values:
        raise AlertTransitionError(f"unknown alert status {status!r}; choose from {AlertStatus.values}")
    with transaction.atomic():
        locked = Alert.objects.select_for_update().get(pk=alert.pk)
        if locked.status == status:
            return locked
        if status not in ALERT_TRANSITIONS[locked.status]:
            raise AlertTransitionError(f"alert {locked.pk}: cannot go from {locked.status} to {status}")
        before = locked.status
        locked.status = status
        if note:
            notes = f"{locked.notes}\n{note}".strip()
            if len(notes) > ALERT_NOTES_MAX_LENGTH:
                room = max(ALERT_NOTES_MAX_LENGTH - len(locked.notes) - 1, 0)
                raise ValidationError(
                    {
                        "note": [
                            f"the alert's notes would pass {ALERT_NOTES_MAX_LENGTH:,} characters: {room:,} left; "
                            "shorten the note or the alert's notes"
                        ]
                    }
                )
            locked.notes = notes
        locked.save(update_fields=["status", "notes", "updated_at"])
        audit_record(
            actor=actor, action="alert_status", alert=locked, details={"from": before, "to": status, "note": note}
        )
    return locked


@dataclass(frozen=True)
class BulkTransition:
    """What ``alerts_transition`` did: alerts moved, alerts already in the status, and why others could not move."""

    changed: int
    unchanged: int
    refused: list[str]


# Alerts locked, changed and audited together by the bulk actions: a fixed number of queries per chunk.
BULK_CHUNK_SIZE = 500


def _id_chunks(alerts: QuerySet[Alert], size: int) -> Iterator[list[int]]:
    """The ids of ``alerts`` in ascending chunks of ``size`` (the alerts themselves are never all loaded)."""
    ids = alerts.order_by("pk").values_list("pk", flat=True).distinct()
    last = 0
    while chunk := list(ids.filter(pk__gt=last)[:size]):
        yield chunk
        last = chunk[-1]


def alerts_transition(*, alerts: QuerySet[Alert], status: str, actor: str) -> BulkTransition:
    """Move every alert of ``alerts`` to ``status`` (the alert queue's bulk acknowledge and dismiss), as
    ``alert_transition`` does one at a time (no note): the same allowed transitions, one audit entry per alert that
    changed. Per chunk of ``BULK_CHUNK_SIZE`` alerts: one locking read, one ``UPDATE`` and one insert of audit
    entries, in a transaction of its own, whatever the size of the selection.
    """
    if status not in AlertStatus.values:
        raise AlertTransitionError(f"unknown alert status {status!r}; choose from {AlertStatus.values}")
    changed = unchanged = 0
    refused: list[str] = []
    for chunk in _id_chunks(alerts, BULK_CHUNK_SIZE):
        with transaction.atomic():
            rows = list(
                Alert.objects.select_for_update().filter(pk__in=chunk).order_by("pk").values_list("pk", "status")
            )
            moving = []
            for pk, before in rows:
                if before == status:
                    unchanged += 1
                elif status in ALERT_TRANSITIONS[before]:
                    moving.append((pk, before))
                else:
                    refused.append(f"alert {pk}: cannot go from {before} to {status}")
            if not moving:
                continue
            Alert.objects.filter(pk__in=[pk for pk, _ in moving]).update(status=status, updated_at=timezone.now())
            AuditEntry.objects.bulk_create(
                [
                    AuditEntry(
                        actor=actor,
                        action="alert_status",
                        alert_id=pk,
                        details={"from": before, "to": status, "note": ""},
                    )
                    for pk, before in moving
                ]
            )
            changed += len(moving)
    return BulkTransition(changed=changed, unchanged=unchanged, refused=refused)


@dataclass(frozen=True)
class BulkCoupons:
    """What the alert queue's coupon action did: the interventions it made now, the coupon interventions the
    selected alerts already had (returned, nothing done again), and why alerts got none."""

    made: list[Intervention]
    existing: list[Intervention]
    refused: list[str]


def alerts_send_coupons(*, alerts: QuerySet[Alert], actor: str) -> BulkCoupons:
    """``alert_send_coupon`` for every alert of ``alerts`` (the alert queue's bulk action): the coupon interventions
    made now, those the alerts already had, and why alerts got none (no longer open or acknowledged). The same
    gates (holdout, consent, the customer cooldown, the daily cap) and locks, in the same order (the day's counter,
    the customers, the alerts), per chunk of ``BULK_CHUNK_SIZE`` alerts in a transaction of its own: a fixed
    number of queries per chunk and rule, not a transaction per alert."""
    made: list[Intervention] = []
    already: list[Intervention] = []
    refused: list[str] = []
    for chunk in _id_chunks(alerts, BULK_CHUNK_SIZE):
        with transaction.atomic():
            counter = _locked_counter(timezone.localdate())
            customer_ids = Alert.objects.filter(pk__in=chunk).values("customer_id")
            list(Customer.objects.select_for_update().filter(pk__in=customer_ids).order_by("pk").values_list("pk"))
            locked = list(
                Alert.objects.select_for_update(of=("self",)).select_related("rule").filter(pk__in=chunk).order_by("pk")
            )
            existing = {
                i.alert_id: i for i in Intervention.objects.filter(alert_id__in=chunk, kind=ActionKind.COUPON_EMAIL)
            }
            by_rule: dict[int, list[Alert]] = defaultdict(list)
            for alert in locked:
                if alert.pk in existing:
                    already.append(existing[alert.pk])
                elif alert.status not in (AlertStatus.OPEN, AlertStatus.ACKNOWLEDGED):
                    refused.append(
                        f"alert {alert.pk} is {alert.status}: only open or acknowledged alerts get a coupon "
                        "(reopen it first)"
                    )
                else:
                    by_rule[alert.rule_id].append(alert)
            for group in by_rule.values():
                made += _dispatch_locked(
                    alerts=group, rule=group[0].rule, kind=ActionKind.COUPON_EMAIL, counter=counter, actor=actor
                )
    return BulkCoupons(made=made, existing=already, refused=refused)


def alert_update(
    *, alert: Alert, actor: str, assignee: AbstractBaseUser | None | object = ..., notes: str | None = None
) -> Alert:
    """Change an alert's assignee and/or notes (``...`` leaves the assignee as it is)."""
    with transaction.atomic():
        locked = Alert.objects.select_for_update().get(pk=alert.pk)
        changes: dict[str, object] = {}
        if assignee is not ... and locked.assignee_id != getattr(assignee, "pk", None):
            locked.assignee = assignee
            changes["assignee"] = str(assignee) if assignee else None
        if notes is not None and notes != locked.notes:
            locked.notes = notes
            changes["notes"] = notes
        if changes:
            locked.save(update_fields=["assignee", "notes", "updated_at"])
            audit_record(actor=actor, action="alert_updated", alert=locked, details=changes)
    return locked


# --- Sending -------------------------------------------------------------------------------------


def _coupon_email(intervention: Intervention, customer: Customer) -> EmailMultiAlternatives:
    language = "zh" if (customer.language or "").lower().startswith("zh") else "en"
    name = " ".join((customer.name or "").split()) or ("顾客" if language == "zh" else "there")
    context = {
        "name": name,
        "discount": intervention.coupon_discount_percent,
        "code": intervention.coupon_code,
        "valid_until": intervention.coupon_valid_until,
        "unsubscribe_url": unsubscribe_url(customer_id=customer.pk),
    }
    subject = render_to_string(f"alerts/email/coupon_subject_{language}.txt", context)
    subject = " ".join(subject.split())
    message = EmailMultiAlternatives(
        subject=subject,
        body=render_to_string(f"alerts/email/coupon_{language}.txt", context),
        to=[customer.email],
        headers={
            "Message-ID": f"<{hashlib.sha256(intervention.idempotency_key.encode()).hexdigest()[:32]}@churnsite>",
            "List-Unsubscribe": f"<{context['unsubscribe_url']}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            "X-Churnsite-Intervention": str(intervention.pk),
        },
    )
    message.attach_alternative(render_to_string(f"alerts/email/coupon_{language}.html", context), "text/html")
    return message


def _is_transient_reply(error: BaseException) -> bool:
    """The server answered with a temporary (4xx) reply: RFC 5321 says try again later. 5xx are permanent."""
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        return all(400 <= code < 500 for code, _ in error.recipients.values())
    return isinstance(error, smtplib.SMTPResponseException) and 400 <= error.smtp_code < 500


def _soft_time_limit() -> type[BaseException]:
    from celery.exceptions import SoftTimeLimitExceeded

    return SoftTimeLimitExceeded


@dataclass(frozen=True)
class SendResult:
    """How one send attempt ended: ``sent``, ``retry`` (certainly not sent) or ``failed`` (with the reason)."""

    outcome: str
    error: str = ""


def _error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:2000]


def _unsendable(message: EmailMultiAlternatives) -> str:
    """Why Django would refuse ``message`` before handing anything over (an address with a line break, one it
    cannot parse, a header with a line break), or "" when it would not: the checks its backends make first."""
    encoding = message.encoding or settings.DEFAULT_CHARSET
    try:
        for address in [message.from_email, *message.recipients()]:
            sanitize_address(address, encoding)
        message.message()
    except ValueError as error:  # BadHeaderError is one
        return _error_text(error)
    return ""


def _deliver_email(message: EmailMultiAlternatives) -> SendResult:
    """Hand one message to the mail backend in three steps, each with its own meaning for the errors it raises:
    connecting (nothing left: retry), handing the message over (a server reply decides; anything else leaves the
    delivery unknown: fail, never send twice), closing (the message was accepted: sent). A message Django would
    refuse fails before the first step: it certainly did not leave, and a retry would not change it."""
    if problem := _unsendable(message):
        return SendResult("failed", f"not sent, the message cannot be sent as it is: {problem}")
    connection = get_connection(fail_silently=False)
    try:
        connection.open()
    except smtplib.SMTPResponseException as error:
        return SendResult("retry" if _is_transient_reply(error) else "failed", _error_text(error))
    except smtplib.SMTPNotSupportedError as error:  # STARTTLS or AUTH the server does not offer: a setting to fix
        return SendResult("failed", _error_text(error))
    except (*TRANSIENT_CONNECT_ERRORS, _soft_time_limit()) as error:
        return SendResult("retry", _error_text(error))
    except Exception as error:  # a configuration error (bad TLS settings, ...): retrying will not help
        return SendResult("failed", _error_text(error))
    try:
        sent = connection.send_messages([message])
    except (smtplib.SMTPResponseException, smtplib.SMTPRecipientsRefused) as error:
        _close_quietly(connection)
        return SendResult("retry" if _is_transient_reply(error) else "failed", _error_text(error))
    except Exception as error:  # noqa: BLE001 - whatever it is, nobody knows whether the message left
        _close_quietly(connection)
        return SendResult("failed", f"{DELIVERY_UNKNOWN}, not retried so as never to send twice: {_error_text(error)}")
    _close_quietly(connection)
    if not sent:
        return SendResult("failed", "the mail backend sent nothing (no valid recipient)")
    return SendResult("sent")


def _close_quietly(connection: object) -> None:
    """Close a mail connection; an error here changes nothing about what was sent."""
    try:
        connection.close()  # type: ignore[attr-defined]
    except Exception as error:  # noqa: BLE001 - the outcome is already known
        logger.warning("closing the mail connection failed: %s", _error_text(error))


def _finish(intervention: Intervention, *, status: str, actor: str, reason: str = "", **details: object) -> None:
    intervention.status = status
    intervention.reason = reason[:255]
    update = ["status", "reason", "attempts", "last_error", "response_status", "response_body", "updated_at"]
    if status == InterventionStatus.SENT:
        intervention.sent_at = timezone.now()
        update.append("sent_at")
        Alert.objects.filter(pk=intervention.alert_id, status__in=(AlertStatus.OPEN, AlertStatus.ACKNOWLEDGED)).update(
            status=AlertStatus.ACTIONED, updated_at=timezone.now()
        )
    intervention.save(update_fields=update)
    audit_record(
        actor=actor,
        action=f"intervention_{status}",
        alert=intervention.alert,
        intervention=intervention,
        details={"kind": intervention.kind, "customer_id": intervention.customer_id, "reason": reason, **details},
    )


def _attempts_exhausted(intervention: Intervention, *, actor: str) -> bool:
    """Fail a pending intervention that has had all its attempts (retries of earlier deliveries of its task and of
    re-enqueued ones count together), so that re-enqueueing never means trying forever."""
    allowed = conf.send_max_retries() + 1
    if intervention.attempts < allowed:
        return False
    _finish(
        intervention,
        status=InterventionStatus.FAILED,
        actor=actor,
        reason=f"gave up after {intervention.attempts} attempts: {intervention.last_error}",
    )
    return True


def _suppressed_as_alert_closed(intervention: Intervention, *, actor: str) -> bool:
    """Suppress a pending intervention whose alert staff dismissed or resolved after it was dispatched (its send
    waiting for a retry, say): staff closed the alert, so nothing goes out for it. The caller holds the alert's row
    lock, so a dismissal committed before it is seen and one arriving later waits for the send."""
    if intervention.alert.status not in (AlertStatus.DISMISSED, AlertStatus.RESOLVED):
        return False
    _finish(
        intervention,
        status=InterventionStatus.SUPPRESSED,
        actor=actor,
        reason=f"at send time: alert {intervention.alert.status}",
    )
    return True


def intervention_send_email(*, intervention_id: int, actor: str = "system:email") -> str:
    """Send one coupon email at most once; returns the intervention's status afterwards.

    Consent is checked now, at send time. Raises ``TransientSendError`` (the attempt recorded, the intervention
    still pending) when the email certainly did not leave and a retry may work; a permanent error, or one that
    leaves the delivery unknown, marks it failed with the reason (see the module's docstring).
    """
    transient: TransientSendError | None = None
    with transaction.atomic():
        intervention = (
            Intervention.objects.select_for_update().select_related("alert").filter(pk=intervention_id).first()
        )
        if intervention is None:
            logger.warning("intervention %s does not exist", intervention_id)
            return "missing"
        if intervention.status != InterventionStatus.PENDING:
            logger.info("intervention %s already %s: nothing to send", intervention_id, intervention.status)
            return intervention.status
        if _attempts_exhausted(intervention, actor=actor):
            return intervention.status
        if _suppressed_as_alert_closed(intervention, actor=actor):
            return intervention.status
        # Locked too: an opt-out committed before this line is seen; one arriving later waits for this send.
        customer = Customer.objects.select_for_update().get(pk=intervention.customer_id)
        if not customer.can_be_contacted or not customer.email:
            reason = "opted out" if customer.opted_out_at else "no marketing consent" if customer.email else "no email"
            _finish(intervention, status=InterventionStatus.SUPPRESSED, actor=actor, reason=f"at send time: {reason}")
            return intervention.status
        message = _coupon_email(intervention, customer)
        logger.info("intervention %s claimed: sending the coupon email", intervention_id)
        if (delay := conf.test_send_delay()) > 0:
            time.sleep(delay)
        intervention.attempts += 1
        result = _deliver_email(message)
        if result.outcome == "sent":
            _finish(intervention, status=InterventionStatus.SENT, actor=actor)
        elif result.outcome == "failed":
            intervention.last_error = result.error
            _finish(intervention, status=InterventionStatus.FAILED, actor=actor, reason=result.error)
            return intervention.status
        else:
            intervention.last_error = result.error
            transient = TransientSendError(result.error)
            intervention.save(update_fields=["attempts", "last_error", "updated_at"])
            audit_record(
                actor=actor,
                action="intervention_attempt_failed",
                alert=intervention.alert,
                intervention=intervention,
                details={"error": intervention.last_error, "attempt": intervention.attempts},
            )
    if transient is not None:
        raise transient
    logger.info("intervention %s sent", intervention_id)
    return InterventionStatus.SENT


def webhook_signature(*, secret: str, body: bytes) -> str:
    """The X-Churnsite-Signature header value: ``sha256=`` and the HMAC-SHA256 of the raw body, hex."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _webhook_payload(intervention: Intervention) -> bytes:
    alert = intervention.alert
    payload = {
        "event": "churn.alert",
        "idempotency_key": intervention.idempotency_key,
        "intervention_id": intervention.pk,
        "alert_id": alert.pk,
        "rule": alert.rule.name,
        "customer": {"id": alert.customer_id, "external_id": alert.customer.external_id},
        "as_of": alert.as_of.isoformat(),
        "probability": alert.probability,
        "risk_tier": alert.risk_tier,
        "expected_loss": str(alert.expected_loss),
        "top_factors": alert.top_factors,
    }
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), cls=DjangoJSONEncoder).encode()


def intervention_deliver_webhook(*, intervention_id: int, actor: str = "system:webhook") -> str:
    """POST the alert as signed JSON to the rule's webhook once; the response is recorded.

    2xx: sent. 408, 429 and 5xx replies, network errors and the soft time limit: ``TransientSendError`` (retry;
    a webhook is at least once, its receiver deduplicates by idempotency key). Other replies: failed. All attempts
    together, re-enqueued ones included, are capped as for emails.
    """
    transient = False
    with transaction.atomic():
        intervention = (
            Intervention.objects.select_for_update(of=("self", "alert"))
            .select_related("alert__rule", "alert__customer")
            .filter(pk=intervention_id)
            .first()
        )
        if intervention is None:
            return "missing"
        if intervention.status != InterventionStatus.PENDING:
            return intervention.status
        if _attempts_exhausted(intervention, actor=actor):
            return intervention.status
        if _suppressed_as_alert_closed(intervention, actor=actor):
            return intervention.status
        rule = intervention.alert.rule
        if not rule.webhook_url.lower().startswith(("http://", "https://")):
            _finish(intervention, status=InterventionStatus.FAILED, actor=actor, reason="webhook URL is not http(s)")
            return intervention.status
        if not rule.webhook_secret:
            # A rule saved before a secret was required: an HMAC with an empty key is one anybody can forge.
            _finish(
                intervention,
                status=InterventionStatus.FAILED,
                actor=actor,
                reason="the rule has no webhook secret: not sent unsigned (set one on the rule)",
            )
            return intervention.status
        body = _webhook_payload(intervention)
        intervention.attempts += 1
        status: int | None = None
        try:
            request = urllib.request.Request(  # noqa: S310 - the scheme is checked above
                rule.webhook_url,
                data=body,
                method="POST",
                headers={
                    "Content-Type": "application/json",
                    "User-Agent": "churnsite-webhook/1",
                    "X-Churnsite-Signature": webhook_signature(secret=rule.webhook_secret, body=body),
                    "X-Churnsite-Idempotency-Key": intervention.idempotency_key,
                },
            )
            with urllib.request.urlopen(request, timeout=conf.webhook_timeout()) as response:  # noqa: S310
                status, text = response.status, response.read(4000)
        except urllib.error.HTTPError as error:
            status, text = error.code, error.read(4000)
        except (ValueError, http.client.InvalidURL) as error:  # an unusable URL: a retry will not help
            intervention.last_error = _error_text(error)
            _finish(intervention, status=InterventionStatus.FAILED, actor=actor, reason=intervention.last_error)
            return intervention.status
        except (OSError, http.client.HTTPException, _soft_time_limit()) as error:
            # URLError, refused or reset connections, timeouts, TLS errors, a broken reply, the task's soft time
            # limit: worth a retry (the receiver drops a repeat by X-Churnsite-Idempotency-Key).
            text = _error_text(error).encode()
        intervention.response_status = status
        intervention.response_body = text.decode(errors="replace")[:4000]
        if status is not None and 200 <= status < 300:
            _finish(intervention, status=InterventionStatus.SENT, actor=actor, response_status=status)
        elif status is None or status in (408, 429) or status >= 500:
            transient = True
            intervention.last_error = f"HTTP {status}" if status else intervention.response_body[:2000]
            intervention.save(
                update_fields=["attempts", "last_error", "response_status", "response_body", "updated_at"]
            )
            audit_record(
                actor=actor,
                action="intervention_attempt_failed",
                alert=intervention.alert,
                intervention=intervention,
                details={"response_status": status, "attempt": intervention.attempts},
            )
        else:
            _finish(
                intervention,
                status=InterventionStatus.FAILED,
                actor=actor,
                reason=f"HTTP {status}",
                response_status=status,
            )
    if transient:
        raise TransientSendError(intervention.last_error)
    return intervention.status


def intervention_mark_failed(*, intervention_id: int, reason: str, actor: str = "system:retries") -> None:
    """Give up on a pending intervention (its retries are exhausted)."""
    with transaction.atomic():
        intervention = (
            Intervention.objects.select_for_update().select_related("alert").filter(pk=intervention_id).first()
        )
        if intervention is not None and intervention.status == InterventionStatus.PENDING:
            _finish(intervention, status=InterventionStatus.FAILED, actor=actor, reason=reason)


# --- Outcomes ------------------------------------------------------------------------------------


def intervention_outcomes_record(
    *, now: datetime | None = None, actor: str = "system:outcomes", chunk_size: int = 1000
) -> dict[str, int]:
    """Mark treated and control customers (``MEASURED_TREATED``, ``MEASURED_CONTROL``) retained or churned once
    the rule's horizon has passed since the action was dispatched: retained when they placed a completed order in
    (dispatch, dispatch + horizon]. Both groups are dispatched at the same moment, so an order placed before the
    coupon went out never counts for it. An explicit ``churned_at`` in the window wins, as it does for labels.
    Customers with no order and no event at all (profile data: a bank's or an insurer's, labelled by a churn flag)
    are judged by that flag instead: churned when flagged (``churned_at`` in the window, on or before the
    dispatch, or not known), retained otherwise. Idempotent.

    A fixed number of queries per ``chunk_size`` interventions (their customers' orders read at once, outcomes
    written with two updates and one insert of audit entries), not a few per intervention."""
    now = now or timezone.now()
    counts = {Outcome.RETAINED: 0, Outcome.CHURNED: 0}
    due = (
        Intervention.objects.filter(MEASURED_TREATED | MEASURED_CONTROL, outcome=Outcome.UNKNOWN)
        .select_related("alert__rule")
        .order_by("pk")
    )
    chunk: list[tuple[Intervention, datetime]] = []
    for intervention in due.iterator(chunk_size=chunk_size):
        horizon_end = intervention.created_at + timedelta(days=intervention.alert.rule.horizon_days)
        if horizon_end <= now:
            chunk.append((intervention, horizon_end))
        if len(chunk) == chunk_size:
            _record_outcomes(chunk, now=now, actor=actor, counts=counts)
            chunk = []
    if chunk:
        _record_outcomes(chunk, now=now, actor=actor, counts=counts)
    return {str(k): v for k, v in counts.items()}


def _outcome(
    intervention: Intervention,
    horizon_end: datetime,
    *,
    orders: Sequence[datetime],
    flag: tuple[bool, datetime | None],
    profile: bool,
) -> str:
    dispatched = intervention.created_at
    churned, churned_at = flag
    if churned_at is not None and dispatched < churned_at <= horizon_end:
        return Outcome.CHURNED  # an explicit churn in the window wins, as for labels
    if profile:
        # No orders or events to judge by: the churn flag says it (left after the window: retained in it).
        left = churned and (churned_at is None or churned_at <= horizon_end)
        return Outcome.CHURNED if left else Outcome.RETAINED
    return Outcome.RETAINED if any(dispatched < t <= horizon_end for t in orders) else Outcome.CHURNED


def _record_outcomes(
    chunk: list[tuple[Intervention, datetime]], *, now: datetime, actor: str, counts: dict[str, int]
) -> None:
    orders: dict[int, list[datetime]] = {}
    completed = Order.objects.filter(
        customer_id__in={intervention.customer_id for intervention, _ in chunk},
        status=OrderStatus.COMPLETED,
        placed_at__gt=min(intervention.created_at for intervention, _ in chunk),
        placed_at__lte=max(horizon_end for _, horizon_end in chunk),
    )
    for customer_id, placed_at in completed.values_list("customer_id", "placed_at"):
        orders.setdefault(customer_id, []).append(placed_at)
    customer_ids = {intervention.customer_id for intervention, _ in chunk}
    # Customers with no order and no event at all are profile data, judged by their churn flag. One row per
    # customer, the activity an EXISTS on the (customer, time) indexes: a DISTINCT customer_id over the orders and
    # events returned every one of them, since the models' default ordering widens a DISTINCT to its columns.
    has_activity = Exists(Order.objects.filter(customer=OuterRef("pk"))) | Exists(
        Event.objects.filter(customer=OuterRef("pk"))
    )
    flags: dict[int, tuple[bool, datetime | None]] = {}
    with_activity: set[int] = set()
    for pk, churned, churned_at, active in (
        Customer.objects.filter(pk__in=customer_ids)
        .annotate(has_activity=has_activity)
        .values_list("pk", "churned", "churned_at", "has_activity")
    ):
        flags[pk] = (churned, churned_at)
        if active:
            with_activity.add(pk)
    outcomes = {
        intervention.pk: _outcome(
            intervention,
            horizon_end,
            orders=orders.get(intervention.customer_id, ()),
            flag=flags.get(intervention.customer_id, (False, None)),
            profile=intervention.customer_id not in with_activity,
        )
        for intervention, horizon_end in chunk
    }
    with transaction.atomic():
        # Only those still unknown now (another run may have recorded some): they are locked until the commit.
        open_ids = set(
            Intervention.objects.select_for_update()
            .filter(pk__in=list(outcomes), outcome=Outcome.UNKNOWN)
            .values_list("pk", flat=True)
        )
        for outcome in (Outcome.RETAINED, Outcome.CHURNED):
            ids = [pk for pk in open_ids if outcomes[pk] == outcome]
            Intervention.objects.filter(pk__in=ids).update(outcome=outcome, outcome_at=now, updated_at=timezone.now())
            counts[outcome] += len(ids)
        AuditEntry.objects.bulk_create(
            AuditEntry(
                actor=actor,
                action="intervention_outcome",
                alert=intervention.alert,
                intervention=intervention,
                details={"outcome": outcomes[intervention.pk], "horizon_end": horizon_end.isoformat()},
            )
            for intervention, horizon_end in chunk
            if intervention.pk in open_ids
        )


# --- Idempotency-Key on POST ---------------------------------------------------------------------


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: object
    replayed: bool


def idempotency_records_prune(*, older_than: timedelta) -> int:
    """Delete the stored responses of ``Idempotency-Key`` requests (and of the admin's forms) made longer ago than
    ``older_than`` (the daily pruning); returns how many. A replay after that runs as a new request."""
    deleted, _ = IdempotencyRecord.objects.filter(created_at__lt=timezone.now() - older_than).delete()
    return deleted


def idempotency_records_forget_customers(*, customer_ids: list[int]) -> int:
    """Delete the stored responses about these customers (their erasure): an API answer naming them (an alert or
    an intervention, whose factors may quote their messages) and the customer page's rescore and coupon forms.
    A replay of such a key runs as a new request. Returns how many."""
    deleted = 0
    for start in range(0, len(customer_ids), 500):
        chunk = customer_ids[start : start + 500]
        about = Q(response_body__customer__in=chunk) | Q(path__in=[f"customers/{pk}/send-coupon" for pk in chunk])
        for pk in chunk:
            about |= Q(key__startswith=f"rescore:{pk}:")
        deleted += IdempotencyRecord.objects.filter(about).delete()[0]
    return deleted


def idempotent_request(
    *,
    user: AbstractBaseUser,
    key: str,
    method: str,
    path: str,
    body: bytes,
    handler: Callable[[], tuple[int, object]],
    also_matches: Sequence[bytes] = (),
) -> StoredResponse:
    """Run ``handler`` once per (user, key): a replay gets the stored response and runs nothing.

    The record is inserted before the handler runs, in the handler's transaction, so a concurrent duplicate
    waits on the unique index and then replays; a handler that raises, or answers 400 (an invalid request, which
    does nothing), leaves no record, so the client may retry, with the request corrected.

    ``body`` is what identifies the request's content (the API passes its canonical form, so that a retry that
    serialises the same JSON differently is the same request); a stored record also matches any of
    ``also_matches`` (the raw body, as records made before the canonical form were keyed).

    Raises:
        IdempotencyKeyReused: the key came with a different method, path or body.
    """

    def request_digest(content: bytes) -> str:
        return hashlib.sha256(b"\0".join([method.encode(), path.encode(), content])).hexdigest()

    digest = request_digest(body)
    with transaction.atomic():
        record = None
        existing = IdempotencyRecord.objects.filter(user=user, key=key).first()
        if existing is None:
            try:
                with transaction.atomic():
                    record = IdempotencyRecord.objects.create(
                        user=user, key=key, method=method, path=path[:1024], request_sha256=digest
                    )
            except IntegrityError:
                existing = IdempotencyRecord.objects.get(user=user, key=key)
        if existing is not None:
            if existing.request_sha256 != digest and all(
                existing.request_sha256 != request_digest(content) for content in also_matches
            ):
                raise IdempotencyKeyReused(f"Idempotency-Key {key!r} was already used for a different request")
            return StoredResponse(status=existing.response_status, body=existing.response_body, replayed=True)
        status, payload = handler()
        if status == 400:
            # A request refused as invalid did nothing: kept, its key would answer the corrected request with a
            # 422 (another body) and make the client find a new key for what is still its first attempt.
            record.delete()
            return StoredResponse(status=status, body=_json_safe(payload), replayed=False)
        record.response_status = status
        record.response_body = _json_safe(payload)
        record.save(update_fields=["response_status", "response_body"])
    return StoredResponse(status=status, body=record.response_body, replayed=False)
