"""Helpers for service tests: real Celery worker processes against the real broker and database, and callers
running at the same moment on their own database connections."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path

from django.db import connection, connections

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def run_in_threads(count: int, target: Callable[[int], object], *, timeout: float = 60) -> list[object]:
    """Call ``target(0)`` .. ``target(count - 1)`` in threads released together, each on its own connection.

    Returns:
        What each call returned, or the exception it raised.
    """
    barrier = threading.Barrier(count)
    results: list[object] = [None] * count

    def body(index: int) -> None:
        try:
            barrier.wait()
            results[index] = target(index)
        except Exception as error:  # noqa: BLE001 - returned to the test, which asserts on it
            results[index] = error
        finally:
            connections.close_all()

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    return results


def beat_send_times(*logs: Path, task: str) -> list[datetime]:
    """When the beats writing ``logs`` sent the periodic task named ``task``, in order (their INFO log's times)."""
    return sorted(
        datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
        for log in logs
        for line in log.read_text(errors="replace").splitlines()
        if f"Sending due task {task} " in line
    )


def worker_database_url() -> str:
    """The URL of the database pytest-django created, so that a worker process writes where the test reads."""
    db = connection.settings_dict
    user = db.get("USER") or "postgres"
    auth = f"{user}:{db['PASSWORD']}" if db.get("PASSWORD") else user
    return f"postgres://{auth}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


class WorkerProcess:
    """A `celery worker` subprocess consuming the given queues; its log is kept for failure messages."""

    def __init__(
        self,
        *,
        queues: Iterable[str],
        log_dir: Path,
        extra_env: dict[str, str] | None = None,
        concurrency: int = 1,
    ) -> None:
        self.queues = list(queues)
        self.name = f"test-{uuid.uuid4().hex[:8]}@%h"
        self.log_path = log_dir / f"worker-{uuid.uuid4().hex[:8]}.log"
        env = {**os.environ, "DATABASE_URL": worker_database_url(), "CELERY_TASK_ALWAYS_EAGER": "false"}
        # Test stores sit at fixed past dates: their scoring runs are not backfills here (as in tests/conftest.py).
        env["ALERTS_MAX_SCORE_AGE_DAYS"] = "36500"
        env.update(extra_env or {})
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "churnsite", "worker",
                "-Q", ",".join(self.queues), "-n", self.name, "--pool", "prefork", "--concurrency", str(concurrency),
                "--without-gossip", "--without-mingle", "-l", "INFO",
            ],
            cwd=PROJECT_ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited with {self.process.returncode}:\n{self.log()}")
            if b"ready." in self.log_path.read_bytes():
                return
            time.sleep(0.2)
        raise TimeoutError(f"worker not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def kill(self) -> None:
        """SIGKILL the worker and its pool processes at once, as a crash or an OOM kill would."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self._log.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
