"""The query plan of a statement, as a table of millions of rows would get it (for tests of index use)."""

from __future__ import annotations

from django.db import connection


def index_plan(sql: str) -> str:
    """``EXPLAIN`` of ``sql`` on PostgreSQL with sequential scans and sorts ruled out where an index can serve, as
    the planner chooses on a big table (a test table is small enough that a scan always wins); SQLite's ``EXPLAIN
    QUERY PLAN`` otherwise."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET enable_seqscan = off")
            cursor.execute("SET enable_sort = off")
            try:
                cursor.execute("EXPLAIN " + sql)
                return "\n".join(row[0] for row in cursor.fetchall())
            finally:
                cursor.execute("RESET enable_seqscan")
                cursor.execute("RESET enable_sort")
        cursor.execute("EXPLAIN QUERY PLAN " + sql)
        return "\n".join(str(row[-1]) for row in cursor.fetchall())
