"""The operating schedules, stored in the database and editable in the admin (Periodic tasks):
daily rescoring, weekly retraining and a daily drift check."""

from __future__ import annotations

from django.db import migrations

from churnsite.migration_operations import schedule_first_or_create


def create_schedules(apps, schema_editor) -> None:  # noqa: ANN001
    CrontabSchedule = apps.get_model("django_celery_beat", "CrontabSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")

    def crontab(minute: str, hour: str, day_of_week: str = "*") -> object:
        return schedule_first_or_create(
            CrontabSchedule,
            minute=minute, hour=hour, day_of_week=day_of_week, day_of_month="*", month_of_year="*", timezone="UTC"
        )

    for name, task, schedule, description in [
        ("daily rescoring", "predictions.rescore_all", crontab("0", "2"), "Score every customer with the champion."),
        ("weekly retraining", "predictions.retrain", crontab("0", "3", "0"), "Train a challenger; promoted if better."),
        ("daily drift check", "predictions.check_drift", crontab("30", "2"), "PSI of scores and top features."),
    ]:
        PeriodicTask.objects.get_or_create(
            name=name, defaults={"task": task, "crontab": schedule, "queue": "default", "description": description}
        )


def remove_schedules(apps, schema_editor) -> None:  # noqa: ANN001
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(
        name__in=["daily rescoring", "weekly retraining", "daily drift check"]
    ).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("predictions", "0005_scoring_run_full"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedules, remove_schedules)]
