"""REST representations of customers and their timeline. Read-only: writes go through the import endpoint."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from customers.models import Customer, CustomerProfileChange, ImportKind, ImportRun
from customers.selectors import TimelineEntry

__all__ = [
    "CustomerDetailSerializer",
    "CustomerSerializer",
    "ImportReportSerializer",
    "ImportRowErrorSerializer",
    "TimelineEntrySerializer",
]


class CustomerSerializer(serializers.ModelSerializer):
    """One customer in a list, with the order stats of ``customers_with_order_stats``."""

    order_count = serializers.IntegerField(read_only=True)
    last_order_at = serializers.DateTimeField(read_only=True, allow_null=True)
    completed_revenue = serializers.DecimalField(max_digits=16, decimal_places=2, read_only=True)

    class Meta:
        model = Customer
        fields = [
            "id",
            "external_id",
            "name",
            "email",
            "segment",
            "country",
            "language",
            "signed_up_at",
            "marketing_consent",
            "opted_out_at",
            "churned",
            "churned_at",
            "is_minimal",
            "order_count",
            "last_order_at",
            "completed_revenue",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class TimelineEntrySerializer(serializers.Serializer):
    at = serializers.DateTimeField()
    kind = serializers.CharField()
    object_id = serializers.IntegerField()
    summary = serializers.CharField()
    text = serializers.CharField()


class ProfileChangeSerializer(serializers.ModelSerializer):
    previous = serializers.JSONField(help_text="The changed fields' values before the change.")

    class Meta:
        model = CustomerProfileChange
        fields = ["changed_at", "previous", "source"]
        read_only_fields = fields


class CustomerDetailSerializer(CustomerSerializer):
    """A customer with its free-form attributes, its profile history and its timeline, newest first (set by the
    view)."""

    timeline = serializers.SerializerMethodField()
    profile_history = serializers.SerializerMethodField()

    class Meta(CustomerSerializer.Meta):
        fields = [*CustomerSerializer.Meta.fields, "attributes", "profile_history", "timeline"]
        read_only_fields = fields

    @extend_schema_field(ProfileChangeSerializer(many=True))
    def get_profile_history(self, customer: Customer) -> list[dict[str, object]]:
        return ProfileChangeSerializer(self.context.get("profile_history", []), many=True).data

    @extend_schema_field(TimelineEntrySerializer(many=True))
    def get_timeline(self, customer: Customer) -> list[dict[str, object]]:
        entries: list[TimelineEntry] = self.context.get("timeline", [])
        return TimelineEntrySerializer(entries, many=True).data


class ImportRowErrorSerializer(serializers.Serializer):
    """A rejected row: its number (the line in CSV or JSON lines, the sheet row, the element of a JSON array), the
    field and the reason."""

    row = serializers.IntegerField()
    field = serializers.CharField()
    reason = serializers.CharField()


class ImportReportSerializer(serializers.Serializer):
    """The answer of an ingestion (``customers.ingest.ImportResult.as_dict``); the schema's description of it."""

    import_run_id = serializers.IntegerField(help_text="The import run recorded (a dry run too).")
    kind = serializers.ChoiceField(choices=ImportKind.choices)
    source = serializers.CharField(help_text="'api' for a body, the file's name for an upload.")
    dry_run = serializers.BooleanField()
    status = serializers.ChoiceField(choices=ImportRun.Status.choices)
    rows_total = serializers.IntegerField()
    rows_imported = serializers.IntegerField()
    rows_unchanged = serializers.IntegerField(help_text="Rows stored before (a re-send): nothing changed.")
    rows_rejected = serializers.IntegerField()
    customers_created = serializers.IntegerField(help_text="Placeholder customers made for unknown customer ids.")
    notes = serializers.ListField(child=serializers.CharField())
    errors = ImportRowErrorSerializer(many=True, help_text="Every rejected row (up to 1,000).")
