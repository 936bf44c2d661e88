from __future__ import annotations

from datetime import UTC, datetime

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from predictions.models import ChurnScore, ModelAuditEntry, ModelVersion, ScoringRun, TrainingRun
from predictions.services.scoring import refuse_future_as_of
from predictions.services.training import EARLIEST_AS_OF, LATEST_AS_OF, MAX_WINDOW_DAYS, TRAINING_MODES


class FactorSerializer(serializers.Serializer):
    factor = serializers.CharField()
    direction = serializers.CharField()
    weight = serializers.FloatField()
    evidence = serializers.CharField(allow_blank=True)


class ChurnScoreSerializer(serializers.ModelSerializer):
    customer_external_id = serializers.CharField(source="customer.external_id", read_only=True)
    model_version = serializers.CharField(source="model_version.name", read_only=True)
    top_factors = FactorSerializer(many=True, read_only=True)

    class Meta:
        model = ChurnScore
        fields = [
            "id",
            "customer",
            "customer_external_id",
            "model_version",
            "scoring_run",
            "as_of",
            "probability",
            "risk_tier",
            "top_factors",
            "created_at",
        ]
        read_only_fields = fields


class RealtimeScoreSerializer(serializers.Serializer):
    customer = serializers.CharField(
        help_text="The customer's external id (kept for existing clients; a score row's customer is the id)."
    )
    customer_external_id = serializers.CharField(help_text="The customer's external id, as in a score row.")
    as_of = serializers.DateTimeField()
    probability = serializers.FloatField()
    risk_tier = serializers.CharField()
    model_version = serializers.CharField()
    top_factors = FactorSerializer(many=True)


class ModelAuditEntrySerializer(serializers.ModelSerializer):
    class Meta:
        model = ModelAuditEntry
        fields = ["action", "actor", "details", "at"]
        read_only_fields = fields


class ModelVersionSerializer(serializers.ModelSerializer):
    audit_entries = ModelAuditEntrySerializer(many=True, read_only=True)

    class Meta:
        model = ModelVersion
        fields = [
            "id",
            "name",
            "status",
            "training_run",
            "model_type",
            "mode",
            "encoder",
            "encoder_fingerprint",
            "training_cutoffs",
            "horizon_days",
            "lead_days",
            "holdout_key",
            "metrics",
            "started_by",
            "created_at",
            "trained_at",
            "promoted_at",
            "audit_entries",
        ]
        read_only_fields = fields


class ModelVersionDetailSerializer(ModelVersionSerializer):
    """A model version with its model card (``ml.model_card``: holdout curves, lift, baselines; {} when older)."""

    class Meta(ModelVersionSerializer.Meta):
        fields = [*ModelVersionSerializer.Meta.fields, "model_card"]
        read_only_fields = fields


class _LabelsFromField(serializers.ChoiceField):
    """Written as an option of the request, read back from the run's options (a run without one used activity);
    write-only, a client could not tell a run trained on churn flags from one trained on activity."""

    def get_attribute(self, instance: TrainingRun) -> str:
        return str((instance.config or {}).get("labels_from", "activity"))


class TrainingRunSerializer(serializers.ModelSerializer):
    # The model version the run made (null until it has one): its name, as scores and scoring runs show it, and its
    # id, for model-versions/<id>/ and its promotion.
    model_version = serializers.SerializerMethodField()
    model_version_id = serializers.SerializerMethodField()
    # Bounded here so that a request that can never train is a 400, not a queued run that fails: the label
    # window is counted back from ``as_of`` (3650 days, as alert rules allow, and a year after 1970).
    mode = serializers.ChoiceField(
        choices=TRAINING_MODES, required=False, help_text="Default: CHURN_DEFAULT_MODE, as for churn_train."
    )
    horizon_days = serializers.IntegerField(
        min_value=1,
        max_value=MAX_WINDOW_DAYS,
        required=False,
        help_text="Days after each cutoff that decide churn. Default: CHURN_HORIZON_DAYS, as for churn_train.",
    )
    lead_days = serializers.IntegerField(min_value=0, max_value=MAX_WINDOW_DAYS, required=False)
    labels_from = _LabelsFromField(
        choices=("activity", "flag"),
        required=False,
        help_text="activity (default): churn is no order in the horizon after each cutoff; flag: profile data, "
        "labelled by each customer's churn flag.",
    )

    @extend_schema_field({"type": "string", "nullable": True})
    def get_model_version(self, run: TrainingRun) -> str | None:
        version = _run_model_version(run)
        return version.name if version is not None else None

    @extend_schema_field({"type": "integer", "nullable": True})
    def get_model_version_id(self, run: TrainingRun) -> int | None:
        version = _run_model_version(run)
        return version.pk if version is not None else None

    def validate_as_of(self, value: datetime | None) -> datetime | None:
        if value is not None and not EARLIEST_AS_OF <= value.year <= LATEST_AS_OF:
            raise serializers.ValidationError(f"must be between the years {EARLIEST_AS_OF} and {LATEST_AS_OF}.")
        if value is not None:
            try:
                refuse_future_as_of(value)
            except ValueError as exc:
                raise serializers.ValidationError(str(exc)) from None
        return value

    class Meta:
        model = TrainingRun
        fields = [
            "id",
            "mode",
            "as_of",
            "horizon_days",
            "lead_days",
            "labels_from",
            "status",
            "progress_percent",
            "current_step",
            "log_tail",
            "error",
            "started_by",
            "created_at",
            "started_at",
            "finished_at",
            "model_version",
            "model_version_id",
        ]
        read_only_fields = [f for f in fields if f not in ("mode", "as_of", "horizon_days", "lead_days", "labels_from")]
        extra_kwargs = {
            "as_of": {
                "required": False,
                # As churn_train --as-of reads it: a date is midnight UTC, a time without an offset is UTC (in
                # the site's zone, the same string moved the cutoff and every label window by hours).
                "default_timezone": UTC,
                "help_text": "Data up to this time (default: now, or where the data ends when earlier). A date is "
                "midnight UTC and a time without an offset is UTC, as for churn_train --as-of.",
            }
        }


def _run_model_version(run: TrainingRun) -> ModelVersion | None:
    try:
        return run.model_version
    except ModelVersion.DoesNotExist:
        return None


class ScoringRunSerializer(serializers.ModelSerializer):
    model_version = serializers.CharField(source="model_version.name", read_only=True)

    class Meta:
        model = ScoringRun
        fields = [
            "id",
            "model_version",
            "as_of",
            "status",
            "trigger",
            "customers_total",
            "customers_scored",
            "texts_encoded",
            "texts_reused",
            "error",
            "created_at",
            "finished_at",
        ]
        read_only_fields = fields
