"""REST serializers of the alerts app: validation and output only (services do the writes)."""

from __future__ import annotations

from rest_framework import serializers

from alerts.models import ALERT_NOTES_MAX_LENGTH, Alert, AlertRule, AlertStatus, Intervention
from alerts.selectors import alert_assignees


class AlertRuleSerializer(serializers.ModelSerializer):
    class Meta:
        model = AlertRule
        fields = [
            "id", "name", "description", "active", "segments", "attribute_filters", "min_customer_value",
            "value_window_days", "value_attribute", "trigger", "threshold", "segment_thresholds", "top_n", "top_percent", "budget",
            "cooldown_days", "action", "coupon_discount_percent", "coupon_valid_days", "coupon_cost", "webhook_url",
            "webhook_secret", "holdout_fraction", "horizon_days", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = ["id", "created_at", "updated_at"]
        # Day counts are added to dates: beyond ten years they overflow (found by the API fuzzing test).
        extra_kwargs = {
            "webhook_secret": {"write_only": True},
            **{
                name: {"max_value": 3650}
                for name in ("value_window_days", "cooldown_days", "coupon_valid_days", "horizon_days")
            },
        }


class InterventionSerializer(serializers.ModelSerializer):
    class Meta:
        model = Intervention
        fields = [
            "id", "alert", "customer", "kind", "status", "reason", "coupon_code", "coupon_discount_percent",
            "coupon_valid_until", "coupon_cost", "idempotency_key", "attempts", "response_status", "sent_at",
            "outcome", "outcome_at", "created_at",
        ]  # fmt: skip
        read_only_fields = fields


class AlertSerializer(serializers.ModelSerializer):
    customer_external_id = serializers.CharField(source="customer.external_id", read_only=True)
    customer_segment = serializers.CharField(source="customer.segment", read_only=True)
    rule_name = serializers.CharField(source="rule.name", read_only=True)
    assignee = serializers.CharField(source="assignee.get_username", read_only=True, default=None, allow_null=True)

    class Meta:
        model = Alert
        fields = [
            "id", "customer", "customer_external_id", "customer_segment", "rule", "rule_name", "period_start", "as_of",
            "probability", "risk_tier", "customer_value", "expected_loss", "top_factors", "holdout", "status",
            "assignee", "notes", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = fields


class AlertUpdateSerializer(serializers.Serializer):
    assignee = serializers.SlugRelatedField(
        slug_field="username",
        queryset=alert_assignees(),  # as in the admin: active staff who may work alerts
        allow_null=True,
        required=False,
    )
    notes = serializers.CharField(required=False, allow_blank=True, max_length=ALERT_NOTES_MAX_LENGTH)


class AlertTransitionSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=AlertStatus.choices)
    note = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)


class UpliftReportSerializer(serializers.Serializer):
    treated = serializers.IntegerField()
    treated_retained = serializers.IntegerField()
    control = serializers.IntegerField()
    control_retained = serializers.IntegerField()
    coupons_cost = serializers.DecimalField(max_digits=14, decimal_places=2)
    treated_rate = serializers.FloatField(allow_null=True)
    control_rate = serializers.FloatField(allow_null=True)
    difference = serializers.FloatField(allow_null=True)
    ci_low = serializers.FloatField(allow_null=True)
    ci_high = serializers.FloatField(allow_null=True)
    number_needed_to_treat = serializers.FloatField(allow_null=True)
    cost_per_customer_saved = serializers.DecimalField(max_digits=14, decimal_places=2, allow_null=True)
