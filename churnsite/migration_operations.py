"""Migration operations that keep a busy PostgreSQL database writable while they run."""

from __future__ import annotations

from django.db.migrations.operations import AddIndex

__all__ = ["AddIndexConcurrently"]


class AddIndexConcurrently(AddIndex):
    """``AddIndex`` that builds the index with ``CREATE INDEX CONCURRENTLY`` on PostgreSQL: a plain build blocks
    every insert, update and delete of the table until it ends (scores and alerts are written by every scoring
    run). Elsewhere (SQLite) a plain ``AddIndex``. The migration must say ``atomic = False``: PostgreSQL cannot
    build concurrently inside a transaction."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state) -> None:  # noqa: ANN001
        model = to_state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(schema_editor.connection.alias, model):
            return
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.add_index(model, self.index, concurrently=True)
        else:
            schema_editor.add_index(model, self.index)

    def database_backwards(self, app_label, schema_editor, from_state, to_state) -> None:  # noqa: ANN001
        model = from_state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(schema_editor.connection.alias, model):
            return
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.remove_index(model, self.index, concurrently=True)
        else:
            schema_editor.remove_index(model, self.index)
