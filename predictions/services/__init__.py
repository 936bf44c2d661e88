"""Writes of the predictions app (re-exported from the modules of this package)."""

from __future__ import annotations

from predictions.services.operations import (
    task_deliveries_prune,
    task_delivery_begin,
    task_delivery_finish,
    task_delivery_release,
    worker_heartbeat_record,
)
from predictions.services.registry import (
    PromotionPolicy,
    model_audit_record,
    model_version_consider_promotion,
    model_version_promote,
    model_version_register,
    model_version_rollback,
    promotion_comparison,
)
from predictions.services.retention import churn_scores_prune

__all__ = [
    "PromotionPolicy",
    "churn_scores_prune",
    "model_audit_record",
    "model_version_consider_promotion",
    "model_version_promote",
    "model_version_register",
    "model_version_rollback",
    "promotion_comparison",
    "task_deliveries_prune",
    "task_delivery_begin",
    "task_delivery_finish",
    "task_delivery_release",
    "worker_heartbeat_record",
]
