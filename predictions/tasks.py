"""Celery tasks of the predictions app. Thin: each calls one service."""

from __future__ import annotations

from celery import shared_task

from predictions.services import worker_heartbeat_record


@shared_task(bind=True, name="predictions.worker_heartbeat", queue="default", soft_time_limit=30, time_limit=60)
def worker_heartbeat_task(self, queue: str = "default") -> int:  # noqa: ANN001 - Celery binds the task
    """Record that a worker consumed ``queue``. Idempotent: one row per worker and queue, updated."""
    return worker_heartbeat_record(hostname=self.request.hostname or "unknown", queue=queue).pk
