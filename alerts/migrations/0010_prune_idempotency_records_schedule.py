"""The daily pruning of stored Idempotency-Key responses (``alerts.prune_idempotency_records``), at 3:20 UTC."""

from django.db import migrations

from churnsite.migration_operations import daily_schedule


class Migration(migrations.Migration):
    dependencies = [
        ("alerts", "0009_mark_earlier_repeats_not_measured"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [
        daily_schedule(
            name="prune idempotency records",
            task="alerts.prune_idempotency_records",
            hour=3,
            minute=20,
            description="Delete stored Idempotency-Key responses older than CHURN_RECORDS_KEEP_DAYS.",
        ),
    ]
