"""Default periodic tasks of the alerts app, stored in the database so staff can edit them in the admin."""

from __future__ import annotations

from django.db import migrations

from churnsite.migration_operations import schedule_first_or_create

SCHEDULES = (
    # name, task, every (seconds), description
    (
        "alert outcomes (daily)",
        "alerts.record_outcomes",
        24 * 3600,
        "Marks treated and control customers retained or churned once their rule's horizon has passed.",
    ),
    (
        "re-enqueue pending retention sends",
        "alerts.requeue_pending",
        15 * 60,
        "Sends whose task was lost (broker down at commit time) are enqueued again; sends happen once.",
    ),
)


def create_schedules(apps, schema_editor) -> None:  # noqa: ANN001
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    for name, task, every, description in SCHEDULES:
        interval = schedule_first_or_create(IntervalSchedule, every=every, period="seconds")
        PeriodicTask.objects.get_or_create(
            name=name,
            defaults={"task": task, "interval": interval, "queue": "default", "description": description},
        )


def remove_schedules(apps, schema_editor) -> None:  # noqa: ANN001
    names = [name for name, *_ in SCHEDULES]
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name__in=names).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("alerts", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedules, remove_schedules)]
