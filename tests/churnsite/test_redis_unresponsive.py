"""A Redis broker that stops answering (frozen, failed over, or behind a dropped NAT entry: the TCP connection is
accepted or stays open but no reply comes) must not hang the processes that talk to it: /healthz must say
``"broker": "error"`` while the load balancer still waits for it, and a web request that enqueues a task must fail
rather than hold its gunicorn worker forever.

The broker here is a real ``redis-server`` stopped with SIGSTOP, not a mock.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.services import PROJECT_ROOT

CONFIG_VARIABLES = ("DATABASE_URL", "REDIS_URL", "CHURN_CACHE_URL", "CHURN_VAR_DIR", "DJANGO_DEBUG")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def frozen_redis(tmp_path: Path) -> Iterator[str]:
    """The URL of a real Redis server that accepted connections, then froze (SIGSTOP)."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("needs the redis-server binary")
    port = _free_port()
    process = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        client = redis.Redis(port=port, socket_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        client.close()
        os.kill(process.pid, signal.SIGSTOP)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        os.kill(process.pid, signal.SIGCONT)
        process.terminate()
        process.wait(timeout=10)


def _shell(
    code: str, *, redis_url: str, var_dir: Path, timeout: float, extra_env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str] | None, float]:
    clean = {k: v for k, v in os.environ.items() if k not in CONFIG_VARIABLES and not k.startswith("CELERY_")}
    env = {**clean, "REDIS_URL": redis_url, "CELERY_TASK_ALWAYS_EAGER": "false", "CHURN_VAR_DIR": str(var_dir)}
    env.update(extra_env or {})
    started = time.monotonic()
    try:
        result = subprocess.run(
            [sys.executable, "manage.py", "shell", "-v0", "-c", code],
            cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return None, time.monotonic() - started
    return result, time.monotonic() - started


def test_healthz_reports_a_broker_that_stopped_answering_instead_of_hanging(frozen_redis: str, tmp_path: Path) -> None:
    result, took = _shell(
        "from churnsite.health import broker_state; print(broker_state())",
        redis_url=frozen_redis, var_dir=tmp_path, timeout=30,
    )  # fmt: skip
    assert result is not None, f"the broker check of /healthz still had no answer after {took:.0f} s"
    assert result.stdout.split()[-1:] == ["error"], result.stdout + result.stderr[-2000:]


def test_enqueueing_a_task_fails_instead_of_hanging_when_the_broker_stopped_answering(
    frozen_redis: str, tmp_path: Path
) -> None:
    result, took = _shell(
        "from predictions.tasks import rescore_all_task\n"
        "try:\n    rescore_all_task.delay()\nexcept Exception as exc:\n    print('refused', type(exc).__name__)\n",
        redis_url=frozen_redis, var_dir=tmp_path, timeout=60,
        # A 1 s socket timeout (5 s by default) gives up on the publish after 2 s of retries instead of 10.
        extra_env={"CHURN_REDIS_SOCKET_TIMEOUT": "1"},
    )  # fmt: skip
    assert result is not None, f"sending a task to the unresponsive broker still blocked after {took:.0f} s"
    assert "refused" in result.stdout, result.stdout + result.stderr[-2000:]
