"""Tests across real connections: PostgreSQL migrations and a real Celery worker fed through Redis."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from predictions.models import WorkerHeartbeat
from predictions.tasks import worker_heartbeat_task
from tests.services import WorkerProcess

pytestmark = pytest.mark.services


@pytest.mark.django_db
def test_all_migrations_apply_on_postgresql() -> None:
    assert connection.vendor == "postgresql", f"running on {connection.vendor}"
    executor = MigrationExecutor(connection)
    unapplied = executor.migration_plan(executor.loader.graph.leaf_nodes())
    assert unapplied == [], f"unapplied migrations: {unapplied}"


@pytest.mark.django_db(transaction=True)
def test_real_worker_consumes_a_task_from_redis_and_writes_a_row(tmp_path: Path) -> None:
    assert settings.CELERY_BROKER_URL.startswith("redis://")
    queue = f"test-{uuid.uuid4().hex[:8]}"
    worker = WorkerProcess(queues=[queue], log_dir=tmp_path)
    try:
        worker.wait_ready()
        result = worker_heartbeat_task.apply_async(kwargs={"queue": queue}, queue=queue)
        pk = result.get(timeout=60)
        heartbeat = WorkerHeartbeat.objects.get(pk=pk)
    finally:
        worker.stop()
    assert heartbeat.queue == queue and heartbeat.hostname.startswith("test-"), worker.log()
