from django.db import migrations, models
from django.db.models import F


def mark_finished_runs_sent(apps, schema_editor) -> None:  # noqa: ANN001
    # Runs finished before this field existed had their follow-ups enqueued then: never send them again.
    ScoringRun = apps.get_model("predictions", "ScoringRun")
    ScoringRun.objects.filter(finished_at__isnull=False).update(followups_sent_at=F("finished_at"))


class Migration(migrations.Migration):
    dependencies = [
        ("predictions", "0010_training_run_resent_at"),
    ]

    operations = [
        migrations.AddField(
            model_name="scoringrun",
            name="followups_sent_at",
            field=models.DateTimeField(
                blank=True,
                help_text="When the tasks that act on its scores (the alert rules) were handed to the broker.",
                null=True,
            ),
        ),
        migrations.RunPython(mark_finished_runs_sent, migrations.RunPython.noop),
    ]
