"""The daily pruning of stored Idempotency-Key responses (``alerts.prune_idempotency_records``), at 3:20 UTC."""

from django.db import migrations

from churnsite.migration_operations import schedule_first_or_create

SCHEDULE_NAME = "prune idempotency records"


def create_schedule(apps, schema_editor) -> None:  # noqa: ANN001
    CrontabSchedule = apps.get_model("django_celery_beat", "CrontabSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    daily = schedule_first_or_create(
        CrontabSchedule, minute="20", hour="3", day_of_week="*", day_of_month="*", month_of_year="*", timezone="UTC"
    )
    PeriodicTask.objects.get_or_create(
        name=SCHEDULE_NAME,
        defaults={"task": "alerts.prune_idempotency_records", "crontab": daily, "queue": "default", "description": "Delete stored Idempotency-Key responses older than CHURN_RECORDS_KEEP_DAYS."},
    )


def remove_schedule(apps, schema_editor) -> None:  # noqa: ANN001
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=SCHEDULE_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("alerts", "0009_mark_earlier_repeats_not_measured"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [
        migrations.RunPython(create_schedule, remove_schedule),
    ]
