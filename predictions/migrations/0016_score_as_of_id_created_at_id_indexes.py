from django.db import migrations, models

from churnsite.migration_operations import AddIndexConcurrently


class Migration(migrations.Migration):
    # Built concurrently on PostgreSQL (scores stay writable), which a transaction forbids.
    atomic = False

    dependencies = [
        ("predictions", "0015_score_probability_index"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="churnscore",
            index=models.Index(fields=["as_of", "id"], name="score_as_of_id"),
        ),
        AddIndexConcurrently(
            model_name="churnscore",
            index=models.Index(fields=["created_at", "id"], name="score_created_at_id"),
        ),
    ]
