"""Admin pages for the model registry, training progress, scoring runs and scores. Actions call services."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from churnsite.admin_tools import EstimatedCountPaginator
from predictions.models import (
    ChurnScore,
    DriftEvent,
    ModelAuditEntry,
    ModelVersion,
    ScoringRun,
    TaskDelivery,
    TrainingRun,
    WorkerHeartbeat,
)
from predictions.services import model_version_promote, model_version_rollback


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written only by services and tasks: staff look, never edit."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


def _progress_bar(percent: float) -> str:
    return format_html(
        '<div style="width:120px;background:#eee;border-radius:3px">'
        '<div style="width:{}%;background:#417690;color:#fff;font-size:11px;padding:1px 3px;border-radius:3px">'
        "{}%</div></div>",
        round(percent),
        round(percent),
    )


class ModelAuditInline(admin.TabularInline):
    model = ModelAuditEntry
    extra = 0
    can_delete = False
    fields = ("at", "action", "actor", "details")
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest):  # noqa: ANN201 - Django's signature
        # Each row's label names its model version: one query for all rows, not one per row.
        return super().get_queryset(request).select_related("model_version")

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(ModelVersion)
class ModelVersionAdmin(ReadOnlyAdmin):
    list_display = ("name", "status", "model_type", "mode", "roc_auc", "pr_auc", "holdout_size", "created_at")
    list_filter = ("status", "model_type", "mode")
    search_fields = ("name", "encoder")
    readonly_fields = [f.name for f in ModelVersion._meta.fields]
    inlines = [ModelAuditInline]
    actions = ["promote_selected", "roll_back_champion"]

    @admin.display(description="ROC AUC")
    def roc_auc(self, obj: ModelVersion) -> str:
        value = obj.metrics.get("roc_auc")
        return f"{value:.4f}" if isinstance(value, int | float) else "-"

    @admin.display(description="PR AUC")
    def pr_auc(self, obj: ModelVersion) -> str:
        value = obj.metrics.get("pr_auc")
        return f"{value:.4f}" if isinstance(value, int | float) else "-"

    @admin.display(description="holdout customers")
    def holdout_size(self, obj: ModelVersion) -> object:
        return obj.metrics.get("n", "-")

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        # The change page stays read-only (readonly_fields); the change permission is what lets staff promote
        # and roll back.
        return request.user.has_perm("predictions.change_modelversion")

    def save_model(self, request: HttpRequest, obj: ModelVersion, form, change: bool) -> None:  # noqa: ANN001
        """Nothing on the page is editable: saving it writes nothing (a save would write back the row as it was
        read, over a promotion made meanwhile). The registry's services are the only writers."""

    @admin.action(description="Promote the selected model to champion", permissions=["change"])
    def promote_selected(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one model to promote.", messages.ERROR)
            return
        try:
            version = model_version_promote(model_version=queryset.get(), actor=request.user.get_username())
        except ValueError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return
        self.message_user(request, f"{version.name} is the champion; the next scoring uses it.", messages.SUCCESS)

    @admin.action(description="Roll back the champion to the previous one", permissions=["change"])
    def roll_back_champion(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        try:
            version = model_version_rollback(actor=request.user.get_username())
        except ValueError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return
        self.message_user(request, f"Rolled back: {version.name} is the champion again.", messages.SUCCESS)


@admin.register(TrainingRun)
class TrainingRunAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "mode",
        "status",
        "progress",
        "current_step",
        "as_of",
        "horizon_days",
        "started_by",
        "created_at",
    )
    list_filter = ("status", "mode")
    readonly_fields = [f.name for f in TrainingRun._meta.fields]

    @admin.display(description="progress")
    def progress(self, obj: TrainingRun) -> str:
        return _progress_bar(obj.progress_percent)


@admin.register(ScoringRun)
class ScoringRunAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "model_version",
        "as_of",
        "status",
        "progress",
        "customers_scored",
        "customers_total",
        "texts_encoded",
        "texts_reused",
        "trigger",
        "created_at",
    )
    list_filter = ("status", "trigger")
    readonly_fields = [f.name for f in ScoringRun._meta.fields]

    @admin.display(description="progress")
    def progress(self, obj: ScoringRun) -> str:
        return _progress_bar(100 * obj.customers_scored / obj.customers_total if obj.customers_total else 100)


@admin.register(ChurnScore)
class ChurnScoreAdmin(ReadOnlyAdmin):
    list_display = ("customer", "probability", "risk_tier", "as_of", "model_version")
    list_filter = ("risk_tier", "model_version")
    search_fields = ("customer__external_id", "customer__email", "customer__name")
    list_select_related = ("customer", "model_version")
    readonly_fields = [f.name for f in ChurnScore._meta.fields]
    show_full_result_count = False
    paginator = EstimatedCountPaginator  # one row per customer and scoring run: never counted whole


@admin.register(TaskDelivery)
class TaskDeliveryAdmin(ReadOnlyAdmin):
    list_display = ("task_name", "key", "attempts", "parked_at", "last_started_at", "finished_at")
    list_filter = ("task_name",)


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(ReadOnlyAdmin):
    list_display = ("hostname", "queue", "seen_at")
    list_filter = ("queue",)


@admin.register(DriftEvent)
class DriftEventAdmin(ReadOnlyAdmin):
    list_display = ("checked_at", "model_version", "score_psi", "max_psi", "threshold", "drifted", "training_run")
    list_select_related = ("model_version", "training_run")
    list_filter = ("drifted", "model_version")
    readonly_fields = [f.name for f in DriftEvent._meta.fields]
