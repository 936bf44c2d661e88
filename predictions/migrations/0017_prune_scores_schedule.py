"""The daily pruning of churn scores (``predictions.prune_scores``), at 3:25 UTC."""

from django.db import migrations

from churnsite.migration_operations import daily_schedule


class Migration(migrations.Migration):
    dependencies = [
        ("predictions", "0016_score_as_of_id_created_at_id_indexes"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [
        daily_schedule(
            name="prune churn scores",
            task="predictions.prune_scores",
            hour=3,
            minute=25,
            description="Delete churn scores older than CHURN_SCORES_KEEP_DAYS that no reader needs (each customer's "
            "two newest, those alerts refer to and the champion's newest scoring run stay).",
        ),
    ]
