import django.contrib.postgres.indexes
import django.db.models.functions.text
from django.db import migrations

from churnsite.migration_operations import AddIndexConcurrently, CreateExtensionKept


class Migration(migrations.Migration):
    # Built concurrently on PostgreSQL (messages stay writable: imports and ingestion), which a transaction forbids;
    # neither the extension nor the index elsewhere (they are PostgreSQL's). pg_trgm is a trusted extension from
    # PostgreSQL 13: the database's owner may create it (before 13, a superuser must, ahead of this migration).
    atomic = False

    dependencies = [
        ('customers', '0004_customer_profile_change'),
    ]

    operations = [
        CreateExtensionKept('pg_trgm'),  # reversed, the extension stays: other objects may use it
        AddIndexConcurrently(
            model_name='message',
            index=django.contrib.postgres.indexes.GinIndex(
                django.contrib.postgres.indexes.OpClass(
                    django.db.models.functions.text.Upper('text'), name='gin_trgm_ops'
                ),
                name='message_text_trigram',
            ),
        ),
    ]
