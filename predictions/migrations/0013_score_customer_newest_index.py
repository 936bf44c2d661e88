from django.db import migrations, models

from churnsite.migration_operations import AddIndexConcurrently, RemoveIndexConcurrently


class Migration(migrations.Migration):
    # The new index is built concurrently on PostgreSQL (scores stay writable), which a transaction forbids; it
    # is built before the index it replaces is dropped, so newest-score lookups always have one.
    atomic = False

    dependencies = [
        ('customers', '0004_customer_profile_change'),
        ('predictions', '0012_query_indexes'),
    ]

    operations = [
        AddIndexConcurrently(
            model_name='churnscore',
            index=models.Index(fields=['customer', '-as_of', '-created_at', '-id'], name='score_customer_newest'),
        ),
        # Its prefix: the new index serves every lookup it served. Dropped concurrently too: a plain DROP INDEX
        # would queue every read and write of the scores behind any open transaction on them.
        RemoveIndexConcurrently(
            model_name='churnscore',
            name='score_customer_latest',
        ),
    ]
