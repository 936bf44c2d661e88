from __future__ import annotations

from rest_framework import serializers

from predictions.models import ChurnScore, ModelAuditEntry, ModelVersion, ScoringRun, TrainingRun


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
    customer = serializers.CharField(help_text="The customer's external id.")
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


class TrainingRunSerializer(serializers.ModelSerializer):
    class Meta:
        model = TrainingRun
        fields = [
            "id",
            "mode",
            "as_of",
            "horizon_days",
            "lead_days",
            "status",
            "progress_percent",
            "current_step",
            "log_tail",
            "error",
            "started_by",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = [f for f in fields if f not in ("mode", "as_of", "horizon_days", "lead_days")]


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
