"""The daily pruning of task delivery records (``predictions.prune_task_deliveries``), at 3:15 UTC."""

from django.db import migrations

from churnsite.migration_operations import daily_schedule


class Migration(migrations.Migration):
    dependencies = [
        ("predictions", "0013_score_customer_newest_index"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [
        daily_schedule(
            name="prune task delivery records",
            task="predictions.prune_task_deliveries",
            hour=3,
            minute=15,
            description="Delete task delivery records older than CHURN_RECORDS_KEEP_DAYS (parked ones stay).",
        ),
    ]
