"""The daily pruning of bookkeeping rows (task delivery counts and stored Idempotency-Key responses) and its schedules
(churn scores: tests/predictions/test_retention.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from alerts.models import IdempotencyRecord
from alerts.tasks import prune_idempotency_records_task
from predictions.models import TaskDelivery
from predictions.tasks import prune_task_deliveries_task

pytestmark = pytest.mark.django_db


def test_task_delivery_records_go_after_the_keep_days_but_parked_ones_stay(settings) -> None:  # noqa: ANN001
    settings.CHURN_RECORDS_KEEP_DAYS = 30
    now = timezone.now()
    old, recent = now - timedelta(days=31), now - timedelta(days=29)
    rows = {
        "finished long ago": dict(last_started_at=old, finished_at=old),
        "started long ago, never finished": dict(last_started_at=old),
        "finished recently after a long run": dict(last_started_at=old, finished_at=recent),
        "started recently": dict(last_started_at=recent),
        "parked long ago": dict(last_started_at=old, parked_at=old),
    }
    for key, fields in rows.items():
        TaskDelivery.objects.create(task_name="predictions.score_chunk", key=key, attempts=1, **fields)

    assert prune_task_deliveries_task.delay().get() == 2
    assert set(TaskDelivery.objects.values_list("key", flat=True)) == {
        "finished recently after a long run",
        "started recently",
        "parked long ago",
    }
    assert prune_task_deliveries_task.delay().get() == 0  # again: nothing more


def test_stored_idempotency_responses_go_after_the_keep_days(settings, django_user_model) -> None:  # noqa: ANN001
    settings.CHURN_RECORDS_KEEP_DAYS = 7
    user = django_user_model.objects.create_user("api")
    for key, days in (("old", 8), ("recent", 6)):
        record = IdempotencyRecord.objects.create(
            user=user, key=key, method="POST", path="/api/v1/alerts/1/send-coupon/", request_sha256="0" * 64
        )
        IdempotencyRecord.objects.filter(pk=record.pk).update(created_at=timezone.now() - timedelta(days=days))

    assert prune_idempotency_records_task.delay().get() == 1
    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == ["recent"]


def test_the_prunings_are_scheduled_daily_on_the_default_queue() -> None:
    for task, minute in (
        ("predictions.prune_task_deliveries", "15"),
        ("alerts.prune_idempotency_records", "20"),
        ("predictions.prune_scores", "25"),
    ):
        schedule = PeriodicTask.objects.get(task=task)
        assert schedule.enabled and schedule.queue == "default"
        assert (schedule.crontab.minute, schedule.crontab.hour, schedule.crontab.day_of_week) == (minute, "3", "*")
