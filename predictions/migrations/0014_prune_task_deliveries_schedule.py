"""The daily pruning of task delivery records (``predictions.prune_task_deliveries``), at 3:15 UTC."""

from django.db import migrations

from churnsite.migration_operations import schedule_first_or_create

SCHEDULE_NAME = "prune task delivery records"


def create_schedule(apps, schema_editor) -> None:  # noqa: ANN001
    CrontabSchedule = apps.get_model("django_celery_beat", "CrontabSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    daily = schedule_first_or_create(
        CrontabSchedule, minute="15", hour="3", day_of_week="*", day_of_month="*", month_of_year="*", timezone="UTC"
    )
    PeriodicTask.objects.get_or_create(
        name=SCHEDULE_NAME,
        defaults={"task": "predictions.prune_task_deliveries", "crontab": daily, "queue": "default", "description": "Delete task delivery records older than CHURN_RECORDS_KEEP_DAYS (parked ones stay)."},
    )


def remove_schedule(apps, schema_editor) -> None:  # noqa: ANN001
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=SCHEDULE_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("predictions", "0013_score_customer_newest_index"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [
        migrations.RunPython(create_schedule, remove_schedule),
    ]
