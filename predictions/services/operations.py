"""Worker heartbeats and the redelivery cap of late-acknowledged tasks."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from predictions.models import TaskDelivery, WorkerHeartbeat

logger = logging.getLogger(__name__)


def worker_heartbeat_record(*, hostname: str, queue: str) -> WorkerHeartbeat:
    """Record that the worker ``hostname`` just ran a task from ``queue``."""
    heartbeat, _ = WorkerHeartbeat.objects.update_or_create(
        hostname=hostname, queue=queue, defaults={"seen_at": timezone.now()}
    )
    return heartbeat


def task_delivery_begin(*, task_name: str, key: str, max_attempts: int) -> bool:
    """Count one more start of ``task_name`` for ``key``; False (and parked) once it exceeds ``max_attempts``.

    Called at the start of an idempotent late-acknowledged task: a worker killed mid-task makes the broker
    deliver it again, which is wanted, but a task that crashes its worker every time must stop coming back.
    """
    with transaction.atomic():
        delivery, _ = TaskDelivery.objects.select_for_update().get_or_create(task_name=task_name, key=key)
        if delivery.parked_at is not None:
            return False
        delivery.attempts += 1
        delivery.last_started_at = timezone.now()
        if delivery.attempts > max_attempts:
            delivery.parked_at = delivery.last_started_at
        delivery.save(update_fields=["attempts", "last_started_at", "parked_at"])
    if delivery.parked_at is not None:
        logger.error("%s[%s] parked after %d deliveries", task_name, key, delivery.attempts - 1)
        return False
    return True


def task_delivery_release(*, task_name: str, key: str) -> None:
    """Take back the start counted by ``task_delivery_begin`` for a delivery that found the work held by another
    (it did nothing, so it is no sign of a task that crashes its worker)."""
    TaskDelivery.objects.filter(task_name=task_name, key=key, attempts__gt=0, parked_at__isnull=True).update(
        attempts=F("attempts") - 1
    )


def task_delivery_finish(*, task_name: str, key: str) -> None:
    TaskDelivery.objects.filter(task_name=task_name, key=key).update(finished_at=timezone.now())


def task_deliveries_prune(*, older_than: timedelta) -> int:
    """Delete the delivery records of tasks that finished, or last started, longer ago than ``older_than`` (the
    daily pruning); returns how many. Parked ones are kept: they say why a task stopped coming back. A task
    delivered again after its record went counts its deliveries from one again."""
    cutoff = timezone.now() - older_than
    deleted, _ = (
        TaskDelivery.objects.filter(parked_at__isnull=True)
        .filter(Q(finished_at__lt=cutoff) | Q(finished_at__isnull=True, last_started_at__lt=cutoff))
        .delete()
    )
    return deleted
