from django.db import migrations, models

from churnsite.migration_operations import schedule_first_or_create

SCHEDULE_NAME = "resume lost training runs"


def create_schedule(apps, schema_editor) -> None:  # noqa: ANN001
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every_10_minutes = schedule_first_or_create(IntervalSchedule, every=10, period="minutes")
    PeriodicTask.objects.get_or_create(
        name=SCHEDULE_NAME,
        defaults={
            "task": "predictions.resume_lost_training",
            "interval": every_10_minutes,
            "queue": "default",
            "description": (
                "Send again training runs still pending with the gpu queue idle (a lost message); fail runs a dead "
                "worker left running."
            ),
        },
    )


def remove_schedule(apps, schema_editor) -> None:  # noqa: ANN001
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=SCHEDULE_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("predictions", "0009_scoring_run_resumed_at"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [
        migrations.AddField(
            model_name="trainingrun",
            name="resent_at",
            field=models.DateTimeField(
                blank=True,
                help_text="When its training task was last sent again (its message looked lost).",
                null=True,
            ),
        ),
        migrations.RunPython(create_schedule, remove_schedule),
    ]
