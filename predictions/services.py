"""Writes of the predictions app."""

from __future__ import annotations

from django.utils import timezone

from predictions.models import WorkerHeartbeat


def worker_heartbeat_record(*, hostname: str, queue: str) -> WorkerHeartbeat:
    """Record that the worker ``hostname`` just ran a task from ``queue``."""
    heartbeat, _ = WorkerHeartbeat.objects.update_or_create(
        hostname=hostname, queue=queue, defaults={"seen_at": timezone.now()}
    )
    return heartbeat
