"""Default periodic tasks, stored in the database so staff can edit them in the admin."""

from __future__ import annotations

import json

from django.db import migrations

from churnsite.migration_operations import schedule_first_or_create

QUEUES = ("default", "gpu", "email")


def create_heartbeat_schedules(apps, schema_editor) -> None:  # noqa: ANN001
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every_minute = schedule_first_or_create(IntervalSchedule, every=60, period="seconds")
    for queue in QUEUES:
        PeriodicTask.objects.get_or_create(
            name=f"worker heartbeat ({queue} queue)",
            defaults={
                "task": "predictions.worker_heartbeat",
                "interval": every_minute,
                "kwargs": json.dumps({"queue": queue}),
                "queue": queue,
                "expire_seconds": 55,
                "description": "Proves a worker consumes this queue; /healthz and the admin show the last one.",
            },
        )


def remove_heartbeat_schedules(apps, schema_editor) -> None:  # noqa: ANN001
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(task="predictions.worker_heartbeat").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("predictions", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_heartbeat_schedules, remove_heartbeat_schedules)]
