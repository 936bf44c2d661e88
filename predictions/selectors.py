"""Reads of the predictions app."""

from __future__ import annotations

from django.db.models import QuerySet

from predictions.models import WorkerHeartbeat


def worker_heartbeats() -> QuerySet[WorkerHeartbeat]:
    return WorkerHeartbeat.objects.order_by("queue", "-seen_at")


def champion_model_state() -> str:
    """``ok``, ``missing`` or ``error`` for the model that scoring would use now.

    The model registry does not exist yet, so there is never a champion: ``missing``.
    """
    return "missing"
