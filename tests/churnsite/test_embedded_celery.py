"""The embedded default needs no server: a real worker consumes tasks from the filesystem broker."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_worker_consumes_from_the_filesystem_broker_with_no_server(tmp_path: Path) -> None:
    env = {
        k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"} and not k.startswith("CELERY_")
    }
    env.update({"CHURN_VAR_DIR": str(tmp_path), "CELERY_TASK_ALWAYS_EAGER": "false"})
    run = dict(cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120)
    migrate = subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], **run)
    assert migrate.returncode == 0, migrate.stderr
    send = subprocess.run(
        [sys.executable, "manage.py", "shell", "-v0", "-c",
         "from predictions.tasks import worker_heartbeat_task as t; print(t.apply_async(kwargs={'queue': 'default'}).id)"],
        **run,
    )  # fmt: skip
    assert send.returncode == 0, send.stderr
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "churnsite", "worker", "-Q", "default", "--pool", "solo",
         "-n", "fs-test@%h", "--without-gossip", "--without-mingle"],
        cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        rows: list[tuple[str, str]] = []
        deadline = time.monotonic() + 60
        while not rows and time.monotonic() < deadline:
            time.sleep(0.5)
            with sqlite3.connect(tmp_path / "churnsite.sqlite3") as db:
                rows = db.execute("SELECT hostname, queue FROM predictions_workerheartbeat").fetchall()
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        log.close()
    assert rows and rows[0][0].startswith("fs-test@") and rows[0][1] == "default", (tmp_path / "worker.log").read_text()
