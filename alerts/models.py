"""Alert rules, alerts, retention interventions, their audit log and the counters that keep sends within limits.

Invariants that matter are database constraints, so that no race can break them: one alert per
(customer, rule, period), one intervention per (alert, kind) and per idempotency key, unique coupon
codes, one send counter row per day, one stored response per (user, Idempotency-Key).
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

# The alert queue: the newest scores first and, among alerts from one scoring, the most valuable first (not by
# created_at: one batch's rows are inserted most valuable first, so their creation times run the other way).
ALERT_QUEUE_ORDER = ["-as_of", "-expected_loss", "-id"]
# Longest staff notes on an alert (API and admin).
ALERT_NOTES_MAX_LENGTH = 10_000


class TriggerKind(models.TextChoices):
    PROBABILITY = "probability", "calibrated probability above a threshold"
    TOP_N = "top_n", "top N by expected loss"
    TOP_PERCENT = "top_percent", "top percent by expected loss"


class ActionKind(models.TextChoices):
    COUPON_EMAIL = "coupon_email", "coupon email"
    WEBHOOK = "webhook", "signed webhook"
    NONE = "none", "none (alert only)"


# The rule under which coupons sent by staff from a customer's page are filed (alerts.services.alert_rule_ensure_manual).
MANUAL_RULE_NAME = "Manual: coupon sent by staff from the customer page"


class AlertRule(models.Model):
    """Turns scores into alerts: who is eligible (filter), who is alerted (trigger) and what happens (action).

    Expected loss is the calibrated churn probability times the customer's value: completed order amounts in the
    ``value_window_days`` before the score's ``as_of``, or, with ``value_attribute``, that numeric customer attribute
    (profile data of a bank or a telecom has no orders). A customer alerted by a rule is not alerted again by
    it for ``cooldown_days``; alerts are unique per (customer, rule, period) where periods are ``cooldown_days``
    long. ``budget`` caps the coupon cost of one application of the rule (contacted customers x ``coupon_cost``).
    """

    id = models.BigAutoField(primary_key=True)
    name = models.CharField(max_length=128, unique=True)
    description = models.TextField(blank=True, default="")
    active = models.BooleanField(default=True, db_index=True)
    # Filter
    segments = models.JSONField(default=list, blank=True, help_text="Customer segments; empty means every segment.")
    attribute_filters = models.JSONField(
        default=dict, blank=True, help_text='Customer.attributes that must match exactly, e.g. {"plan": "gold"}.'
    )
    min_customer_value = models.DecimalField(
        max_digits=14, decimal_places=2, null=True, blank=True, validators=[MinValueValidator(0)]
    )
    value_window_days = models.PositiveIntegerField(default=365)
    value_attribute = models.CharField(
        max_length=255,
        blank=True,
        default="",
        help_text=(
            "A numeric customer attribute that is the customer's value (e.g. MonthlyCharges, Credit_Limit), for data "
            "without orders; empty: completed order amounts in the value window. A customer without a positive number "
            "there has value 0."
        ),
    )
    # Trigger
    trigger = models.CharField(max_length=16, choices=TriggerKind.choices, default=TriggerKind.PROBABILITY)
    threshold = models.FloatField(
        default=0.6,
        validators=[MinValueValidator(0), MaxValueValidator(1)],
        help_text="Probability threshold for the probability trigger.",
    )
    segment_thresholds = models.JSONField(
        default=dict, blank=True, help_text='Per-segment thresholds overriding `threshold`, e.g. {"vip": 0.4}.'
    )
    top_n = models.PositiveIntegerField(null=True, blank=True)
    top_percent = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0.001), MaxValueValidator(100)]
    )
    budget = models.DecimalField(
        max_digits=14, decimal_places=2, null=True, blank=True, validators=[MinValueValidator(0)]
    )
    cooldown_days = models.PositiveIntegerField(default=30)
    # Action
    action = models.CharField(max_length=16, choices=ActionKind.choices, default=ActionKind.COUPON_EMAIL)
    coupon_discount_percent = models.PositiveSmallIntegerField(
        default=15, validators=[MinValueValidator(1), MaxValueValidator(90)]
    )
    coupon_valid_days = models.PositiveIntegerField(default=14)
    coupon_cost = models.DecimalField(
        max_digits=10,
        decimal_places=2,
        default=10,
        validators=[MinValueValidator(0)],
        help_text="Expected cost of one coupon sent (budget, uplift).",
    )
    webhook_url = models.URLField(max_length=1024, blank=True, default="")
    webhook_secret = models.CharField(max_length=255, blank=True, default="")
    # Measurement
    holdout_fraction = models.FloatField(
        default=0.10, validators=[MinValueValidator(0), MaxValueValidator(0.99)], help_text="Control group share."
    )
    horizon_days = models.PositiveIntegerField(
        default=60, help_text="Outcome window in days, counted from the dispatch of the action."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(holdout_fraction__gte=0, holdout_fraction__lt=1), name="rule_holdout_0_1"
            ),
            models.CheckConstraint(condition=Q(threshold__gte=0, threshold__lte=1), name="rule_threshold_0_1"),
            # A negative budget would let nobody be treated, a negative cost would lift the cap: money is >= 0.
            models.CheckConstraint(
                condition=Q(budget__isnull=True) | Q(budget__gte=0), name="rule_budget_not_negative"
            ),
            models.CheckConstraint(condition=Q(coupon_cost__gte=0), name="rule_coupon_cost_not_negative"),
            models.CheckConstraint(
                condition=Q(min_customer_value__isnull=True) | Q(min_customer_value__gte=0),
                name="rule_min_value_not_negative",
            ),
            models.CheckConstraint(
                condition=~Q(trigger="top_n") | Q(top_n__isnull=False, top_n__gte=1), name="rule_top_n_needs_n"
            ),
            models.CheckConstraint(
                condition=~Q(trigger="top_percent")
                | Q(top_percent__isnull=False, top_percent__gt=0, top_percent__lte=100),
                name="rule_top_percent_needs_percent",
            ),
            models.CheckConstraint(condition=~Q(action="webhook") | ~Q(webhook_url=""), name="rule_webhook_needs_url"),
            models.CheckConstraint(
                condition=Q(coupon_discount_percent__gte=1, coupon_discount_percent__lte=90), name="rule_discount_1_90"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        """The JSON fields' shapes (a list of segment names, attribute values to match, thresholds in [0, 1]), and
        what the trigger and the action need, each error under the field to fix: the check constraints back the
        first ones, but their errors name no field."""
        errors: dict[str, str] = {}
        if self.name == MANUAL_RULE_NAME and not AlertRule.objects.filter(pk=self.pk, name=MANUAL_RULE_NAME).exists():
            # The manual coupons are filed under the rule of this name, created inactive and without a holdout on
            # first use: a rule given the name before that (or renamed to it) would get them, and count them in its
            # uplift and hold out its customers from them as if its own rule had chosen them.
            errors["name"] = "this name is reserved for the rule that files coupons sent by staff from a customer page"
        elif self.name == MANUAL_RULE_NAME:
            # The manual rule itself: active, it would alert on scores and mix its alerts with the coupons staff
            # chose; a holdout would do nothing, since a customer staff picked is never held out.
            if self.active:
                errors["active"] = (
                    "the rule of coupons sent by staff is never applied to scores and stays inactive "
                    "(a rule of your own that has this name needs another name)"
                )
            if self.holdout_fraction:
                errors["holdout_fraction"] = "coupons sent by staff from a customer page have no control group"
        if self.trigger == TriggerKind.TOP_N and (self.top_n is None or self.top_n < 1):
            errors["top_n"] = "the top N trigger needs top_n, at least 1"
        if self.trigger == TriggerKind.TOP_PERCENT and (self.top_percent is None or not 0 < self.top_percent <= 100):
            errors["top_percent"] = "the top percent trigger needs top_percent, above 0 and at most 100"
        if self.action == ActionKind.WEBHOOK:
            if not self.webhook_url:
                errors["webhook_url"] = "a webhook rule needs the URL to POST to"
            elif not self.webhook_url.lower().startswith(("http://", "https://")):
                errors["webhook_url"] = "a webhook URL starts with http:// or https://"
            # An empty HMAC key signs with a key everybody knows: anyone could forge a "signed" webhook.
            if not self.webhook_secret:
                errors["webhook_secret"] = "a webhook rule needs a secret to sign its requests with"  # noqa: S105
        if not isinstance(self.segments, list) or not all(isinstance(s, str) for s in self.segments):
            errors["segments"] = 'a list of segment names, e.g. ["vip", "gold"]'
        filters = self.attribute_filters
        if not isinstance(filters, dict) or not all(
            isinstance(v, str | int | float | bool) or v is None for v in filters.values()
        ):
            errors["attribute_filters"] = 'an object of attribute names and the values to match, e.g. {"plan": "gold"}'
        thresholds = self.segment_thresholds
        if not isinstance(thresholds, dict) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 1 for v in thresholds.values()
        ):
            errors["segment_thresholds"] = 'an object of segment names and probabilities from 0 to 1, e.g. {"vip": 0.4}'
        if errors:
            raise ValidationError(errors)


class AlertStatus(models.TextChoices):
    OPEN = "open", "open"
    ACKNOWLEDGED = "acknowledged", "acknowledged"
    ACTIONED = "actioned", "actioned"
    DISMISSED = "dismissed", "dismissed"
    RESOLVED = "resolved", "resolved"


class Alert(models.Model):
    """A customer flagged by a rule in one period. The score's probability, tier and factors are copied so the
    alert still explains itself after scores are pruned."""

    id = models.BigAutoField(primary_key=True)
    customer = models.ForeignKey("customers.Customer", on_delete=models.CASCADE, related_name="alerts")
    rule = models.ForeignKey(AlertRule, on_delete=models.PROTECT, related_name="alerts")
    score = models.ForeignKey(
        "predictions.ChurnScore", on_delete=models.SET_NULL, null=True, blank=True, related_name="alerts"
    )
    period_start = models.DateField()
    as_of = models.DateTimeField()
    probability = models.FloatField()
    risk_tier = models.CharField(max_length=8, db_index=True)
    customer_value = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    expected_loss = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    top_factors = models.JSONField(default=list, blank=True)
    holdout = models.BooleanField(
        default=False, help_text="Ticked for a customer in the rule's control group: alerted, never contacted."
    )
    status = models.CharField(max_length=16, choices=AlertStatus.choices, default=AlertStatus.OPEN, db_index=True)
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="churn_alerts"
    )
    notes = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ALERT_QUEUE_ORDER
        constraints = [
            models.UniqueConstraint(
                fields=["customer", "rule", "period_start"], name="one_alert_per_customer_rule_period"
            )
        ]
        indexes = [
            models.Index(fields=["rule", "customer", "-as_of"], name="alert_rule_customer_as_of"),
            # Each rule application: the rule's alerts in the cooldown and in the current periods.
            models.Index(fields=["rule", "as_of"], name="alert_rule_as_of"),
            models.Index(fields=["rule", "period_start"], name="alert_rule_period"),
            # The queue's order, a page at a time (admin and API), and the dashboard's alerts per day.
            models.Index(fields=["-as_of", "-expected_loss", "-id"], name="alert_queue_order"),
            models.Index(fields=["created_at"], name="alert_created_at"),
        ]

    def __str__(self) -> str:
        return f"alert {self.pk}: customer {self.customer_id} by {self.rule_id} ({self.status})"


class InterventionStatus(models.TextChoices):
    PENDING = "pending", "pending"
    SENT = "sent", "sent"
    FAILED = "failed", "failed"
    SUPPRESSED = "suppressed", "suppressed"
    HOLDOUT = "holdout", "holdout (control group)"


class Outcome(models.TextChoices):
    UNKNOWN = "unknown", "unknown (horizon not passed)"
    RETAINED = "retained", "retained"
    CHURNED = "churned", "churned"
    # A repeat action of a rule for a treated customer whose outcome window with that rule is still open: the
    # control group's repeats are left out (never contacted), so counting these would count only one side twice.
    NOT_MEASURED = "not_measured", "not measured (repeat inside an open outcome window)"


class Intervention(models.Model):
    """One retention action for one alert. The state machine only moves out of ``pending``: to ``sent``,
    ``failed`` or ``suppressed`` (by the send service, under a row lock), and ``holdout`` is final from the start.
    """

    id = models.BigAutoField(primary_key=True)
    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="interventions")
    customer = models.ForeignKey("customers.Customer", on_delete=models.CASCADE, related_name="interventions")
    kind = models.CharField(max_length=16, choices=ActionKind.choices)
    status = models.CharField(
        max_length=16, choices=InterventionStatus.choices, default=InterventionStatus.PENDING, db_index=True
    )
    reason = models.CharField(max_length=255, blank=True, default="", help_text="Why suppressed or failed.")
    coupon_code = models.CharField(max_length=32, null=True, blank=True, unique=True)
    coupon_discount_percent = models.PositiveSmallIntegerField(null=True, blank=True)
    coupon_valid_until = models.DateField(null=True, blank=True)
    coupon_cost = models.DecimalField(max_digits=10, decimal_places=2, default=0)
    idempotency_key = models.CharField(max_length=255, unique=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    response_status = models.IntegerField(null=True, blank=True)
    response_body = models.TextField(blank=True, default="")
    sent_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.UNKNOWN, db_index=True)
    outcome_at = models.DateTimeField(null=True, blank=True)
    by_rule = models.BooleanField(
        default=False,
        help_text="The rule's own action (its kind was the rule's action when it was made): what the rule's uplift "
        "counts, whatever the rule's action is changed to later.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["alert", "kind"], name="one_intervention_per_alert_kind"),
            models.CheckConstraint(
                condition=~Q(status="sent") | Q(sent_at__isnull=False), name="sent_intervention_has_sent_at"
            ),
        ]
        indexes = [
            models.Index(fields=["customer", "kind", "-created_at"], name="intervention_customer_recent"),
            models.Index(fields=["-created_at"], name="intervention_recent"),  # the list's order, a page at a time
        ]

    def __str__(self) -> str:
        return f"{self.kind} for customer {self.customer_id} ({self.status})"


class AuditEntry(models.Model):
    """Append-only record of every alert change and every action, with who or what did it."""

    id = models.BigAutoField(primary_key=True)
    at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.CharField(max_length=255, help_text="A user name, or system:<what> for rules and tasks.")
    action = models.CharField(max_length=64)
    rule = models.ForeignKey(AlertRule, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    alert = models.ForeignKey(Alert, on_delete=models.SET_NULL, null=True, blank=True, related_name="audit_entries")
    intervention = models.ForeignKey(
        Intervention, on_delete=models.SET_NULL, null=True, blank=True, related_name="audit_entries"
    )
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{timezone.localtime(self.at):%Y-%m-%d %H:%M:%S} {self.actor}: {self.action}"

    def save(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003 - Model.save signature
        if self.pk is not None and not self._state.adding:
            raise ValueError("audit entries are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201 - Model.delete signature
        raise ValueError("audit entries are append-only")


class DailySendCounter(models.Model):
    """Emails reserved per day. Every dispatch locks today's row (select_for_update) before it reserves, so
    concurrent dispatches are serialised and the daily cap holds under any burst."""

    id = models.BigAutoField(primary_key=True)
    day = models.DateField(unique=True)
    reserved = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.day}: {self.reserved} reserved"


class IdempotencyRecord(models.Model):
    """The stored response of a POST sent with an ``Idempotency-Key`` header: a replay returns it unchanged."""

    id = models.BigAutoField(primary_key=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    method = models.CharField(max_length=8)
    path = models.CharField(max_length=1024)
    request_sha256 = models.CharField(max_length=64)
    # 0 while the first request is still being handled (inside the same transaction, so nobody sees it).
    response_status = models.PositiveSmallIntegerField(default=0)
    response_body = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="one_response_per_user_idempotency_key")]

    def __str__(self) -> str:
        return f"{self.method} {self.path} [{self.key}] -> {self.response_status}"
