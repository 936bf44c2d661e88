"""A lock held until the end of the current transaction, for a check and the write it decides."""

from __future__ import annotations

import hashlib

from django.db import connection

# The names of the locks (one per kind of decision), so that every writer of one kind takes the same lock.
MODEL_REGISTRY_LOCK = "predictions.model_registry"
TRAINING_REQUEST_LOCK = "predictions.training_request"


def transaction_lock(*, name: str) -> None:
    """Wait for the lock ``name``, then hold it until the current transaction commits or rolls back.

    A lock on a row serialises nothing when the row is not there (no champion yet, no training run yet) and lets a
    waiter go on with a row that changed under it; this lock always exists. On PostgreSQL it is a transaction-level
    advisory lock. SQLite needs none: its transactions begin IMMEDIATE (settings), so the first one to start holds
    the database's write lock until it ends and the others wait for it.
    """
    if not connection.in_atomic_block:
        raise RuntimeError(f"the lock {name!r} is held until the transaction ends: take it inside transaction.atomic")
    if connection.vendor != "postgresql":
        return
    key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])
