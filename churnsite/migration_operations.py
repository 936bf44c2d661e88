"""Migration operations that keep a busy PostgreSQL database writable while they run."""

from __future__ import annotations

from django.contrib.postgres.indexes import PostgresIndex
from django.contrib.postgres.operations import CreateExtension
from django.db import migrations
from django.db.migrations.operations import AddIndex, RemoveIndex
from django.db.models import Model

__all__ = [
    "AddIndexConcurrently",
    "CreateExtensionKept",
    "RemoveIndexConcurrently",
    "daily_schedule",
    "schedule_first_or_create",
]


class CreateExtensionKept(CreateExtension):
    """``CreateExtension`` (PostgreSQL only; ``IF NOT EXISTS``) that a reversed migration leaves in place: other
    objects of the database, the project's or not, may use the extension by then, and dropping it would drop them
    too or fail."""

    def database_backwards(self, app_label, schema_editor, from_state, to_state) -> None:  # noqa: ANN001
        return None


class AddIndexConcurrently(AddIndex):
    """``AddIndex`` that builds the index with ``CREATE INDEX CONCURRENTLY`` on PostgreSQL: a plain build blocks
    every insert, update and delete of the table until it ends (scores and alerts are written by every scoring
    run). Elsewhere (SQLite) a plain ``AddIndex``, and nothing for a PostgreSQL-only index (GIN). The migration
    must say ``atomic = False``: PostgreSQL cannot build concurrently inside a transaction."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state) -> None:  # noqa: ANN001
        self._index(schema_editor, to_state.apps.get_model(app_label, self.model_name), "add_index")

    def database_backwards(self, app_label, schema_editor, from_state, to_state) -> None:  # noqa: ANN001
        self._index(schema_editor, from_state.apps.get_model(app_label, self.model_name), "remove_index")

    def _index(self, schema_editor, model, method: str) -> None:  # noqa: ANN001
        if not self.allow_migrate_model(schema_editor.connection.alias, model):
            return
        if schema_editor.connection.vendor != "postgresql" and isinstance(self.index, PostgresIndex):
            return  # a GIN index (the message search's trigrams) is PostgreSQL's; elsewhere its readers do without it
        options = {"concurrently": True} if schema_editor.connection.vendor == "postgresql" else {}
        getattr(schema_editor, method)(model, self.index, **options)


class RemoveIndexConcurrently(RemoveIndex):
    """``RemoveIndex`` that drops the index with ``DROP INDEX CONCURRENTLY`` on PostgreSQL (and rebuilds it
    concurrently when reversed): a plain ``DROP INDEX`` takes an exclusive lock on the table, so it waits behind any
    transaction using the table (a scoring run) while every later read and write of the table waits behind it.
    Elsewhere (SQLite) a plain ``RemoveIndex``. The migration must say ``atomic = False``."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state) -> None:  # noqa: ANN001
        model = from_state.apps.get_model(app_label, self.model_name)
        index = from_state.models[app_label, self.model_name_lower].get_index_by_name(self.name)
        self._index(schema_editor, model, index, "remove_index")

    def database_backwards(self, app_label, schema_editor, from_state, to_state) -> None:  # noqa: ANN001
        model = to_state.apps.get_model(app_label, self.model_name)
        index = to_state.models[app_label, self.model_name_lower].get_index_by_name(self.name)
        self._index(schema_editor, model, index, "add_index")

    def _index(self, schema_editor, model, index, method: str) -> None:  # noqa: ANN001
        if not self.allow_migrate_model(schema_editor.connection.alias, model):
            return
        options = {"concurrently": True} if schema_editor.connection.vendor == "postgresql" else {}
        getattr(schema_editor, method)(model, index, **options)


def schedule_first_or_create(model: type[Model], **fields: object) -> Model:
    """The first stored django_celery_beat schedule (interval, crontab) with these fields, created when there is
    none: what the schedule migrations attach their tasks to. Not ``get_or_create``: django_celery_beat keeps no
    unique constraint on a schedule's fields and its admin lets staff store the same one twice (its own
    ``from_schedule`` takes the first too), where ``get_or_create`` raises ``MultipleObjectsReturned`` and stops
    the upgrade."""
    existing = model.objects.filter(**fields).order_by("pk").first()
    return existing if existing is not None else model.objects.create(**fields)


def daily_schedule(*, name: str, task: str, hour: int, minute: int, description: str) -> migrations.RunPython:
    """A migration operation that schedules ``task`` on the default queue every day at ``hour``:``minute`` UTC as
    the periodic task ``name`` (left as it is when staff stored one by that name), and removes it when reversed."""

    def create(apps, schema_editor) -> None:  # noqa: ANN001
        crontab = schedule_first_or_create(
            apps.get_model("django_celery_beat", "CrontabSchedule"),
            minute=str(minute), hour=str(hour), day_of_week="*", day_of_month="*", month_of_year="*", timezone="UTC",
        )  # fmt: skip
        apps.get_model("django_celery_beat", "PeriodicTask").objects.get_or_create(
            name=name, defaults={"task": task, "crontab": crontab, "queue": "default", "description": description}
        )

    def remove(apps, schema_editor) -> None:  # noqa: ANN001
        apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=name).delete()

    return migrations.RunPython(create, remove)
