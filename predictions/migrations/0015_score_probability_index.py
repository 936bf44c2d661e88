from django.db import migrations, models

from churnsite.migration_operations import AddIndexConcurrently


class Migration(migrations.Migration):
    # Built concurrently on PostgreSQL (scores stay writable), which a transaction forbids.
    atomic = False

    dependencies = [
        ('predictions', '0014_prune_task_deliveries_schedule'),
    ]

    operations = [
        AddIndexConcurrently(
            model_name='churnscore',
            index=models.Index(fields=['-probability', '-id'], name='score_probability'),
        ),
    ]
