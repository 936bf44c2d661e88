"""Health checks for /healthz: the database, the Celery broker and the champion model."""

from __future__ import annotations

from django.conf import settings
from django.db import connection

from churnsite.celery import app as celery_app

_PROBE_SECONDS = 2


def database_state() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception:  # noqa: BLE001 - any failure to answer means the database is down for us
        return "error"
    return "ok"


def broker_state() -> str:
    """``ok`` when the broker accepts a connection; ``eager`` when tasks run in-process and none is needed."""
    if settings.CELERY_TASK_ALWAYS_EAGER:
        return "eager"
    try:
        # A probe must answer in seconds even when Redis accepts connections but no longer replies.
        quick = {"socket_timeout": _PROBE_SECONDS, "socket_connect_timeout": _PROBE_SECONDS}
        with celery_app.connection_for_write(transport_options=quick) as conn:
            conn.ensure_connection(max_retries=1, timeout=_PROBE_SECONDS)
    except Exception:  # noqa: BLE001 - kombu raises transport-specific errors
        return "error"
    return "ok"


def champion_state() -> str:
    from predictions.selectors import champion_model_state

    try:
        return champion_model_state()
    except Exception:  # noqa: BLE001 - a broken registry must not break the health page
        return "error"


def worker_last_seen() -> dict[str, str | None]:
    """ISO time of the last heartbeat a worker recorded for each queue (None: never seen)."""
    from predictions.selectors import worker_heartbeats

    seen: dict[str, str | None] = dict.fromkeys(q.name for q in celery_app.conf.task_queues)
    try:
        heartbeats = list(worker_heartbeats())
    except Exception:  # noqa: BLE001 - a missing table (before migrate) must not turn the health page into a 500
        return seen
    for heartbeat in heartbeats:
        if seen.get(heartbeat.queue) is None:
            seen[heartbeat.queue] = heartbeat.seen_at.isoformat()
    return seen


def system_health() -> tuple[bool, dict[str, object]]:
    """Returns (healthy, states); healthy means the database answers."""
    states: dict[str, object] = {
        "database": database_state(),
        "broker": broker_state(),
        "champion_model": champion_state(),
    }
    states["workers_last_seen"] = worker_last_seen() if states["database"] == "ok" else {}
    return states["database"] == "ok", states
