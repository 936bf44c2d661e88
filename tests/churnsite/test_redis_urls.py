"""REDIS_URL forms an operator may set: each gives a broker and a cache that work, or stops the process at start
with a message naming the setting."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import redis
from django.conf import settings

from churnsite import settings as site_settings
from tests.services import PROJECT_ROOT

CONFIG_VARIABLES = ("DATABASE_URL", "REDIS_URL", "CHURN_CACHE_URL", "CHURN_VAR_DIR", "DJANGO_DEBUG")


def _shell(code: str, *, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in CONFIG_VARIABLES and not k.startswith("CELERY_")}
    return subprocess.run(
        [sys.executable, "manage.py", "shell", "-v0", "-c", code],
        cwd=PROJECT_ROOT, env={**clean, **env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.services
def test_a_broker_on_the_last_redis_database_gets_a_cache_that_works_or_is_refused_at_start(tmp_path: Path) -> None:
    server = urlsplit(settings.REDIS_URL)
    client = redis.Redis(host=server.hostname or "127.0.0.1", port=server.port or 6379)
    last = int(client.config_get("databases")["databases"]) - 1  # 15 with Redis's default of 16 databases
    url = f"redis://{server.hostname or '127.0.0.1'}:{server.port or 6379}/{last}"
    key = f"audit-{uuid.uuid4().hex}"
    result = _shell(
        f"from django.core.cache import cache\ncache.set({key!r}, 'ok', 30)\nprint(cache.get({key!r}))\n"
        f"cache.delete({key!r})",
        env={"REDIS_URL": url, "CHURN_VAR_DIR": str(tmp_path)},
    )
    refused_at_start = (
        result.returncode != 0 and "ImproperlyConfigured" in result.stderr and "CHURN_CACHE_URL" in result.stderr
    )
    works = result.returncode == 0 and result.stdout.split()[-1:] == ["ok"]
    assert refused_at_start or works, result.stderr[-1500:]


def test_a_redis_unix_socket_url_is_accepted(tmp_path: Path) -> None:
    # kombu's form for a Redis server on a unix socket (the database is the ?virtual_host= number).
    result = _shell(
        "from django.conf import settings as s; print(s.CELERY_BROKER_URL, s.CACHES['default']['LOCATION'])",
        env={"REDIS_URL": "redis+socket:///run/redis/redis.sock?virtual_host=3", "CHURN_VAR_DIR": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr[-1500:]
    broker, cache = result.stdout.split()[-2:]
    assert broker == "redis+socket:///run/redis/redis.sock?virtual_host=3"
    assert cache == "unix:///run/redis/redis.sock?db=4", (
        "redis-py's form of the socket, the database after the broker's"
    )


def test_a_cache_on_the_brokers_socket_database_is_refused(tmp_path: Path) -> None:
    result = _shell(
        "from django.conf import settings; print(settings.CACHES)",
        env={
            "REDIS_URL": "redis+socket:///run/redis/redis.sock?virtual_host=2",
            "CHURN_CACHE_URL": "unix:///run/redis/redis.sock?db=2",
            "CHURN_VAR_DIR": str(tmp_path),
        },
    )
    assert result.returncode != 0 and "CHURN_CACHE_URL must not be the broker's Redis database" in result.stderr


@pytest.mark.parametrize(
    "broker",
    [
        "unix://:s3cret@/run/redis/redis.sock?db=0",  # redis-py's form
        "redis+socket://:s3cret@/run/redis/redis.sock?virtual_host=0",  # kombu's form
    ],
)
def test_the_derived_socket_cache_url_keeps_the_brokers_password(broker: str) -> None:
    cache = site_settings._redis_cache_url(broker)
    parts = urlsplit(cache)
    assert parts.password == "s3cret" or parse_qs(parts.query).get("password") == ["s3cret"], cache
    assert parts.path == "/run/redis/redis.sock" and parse_qs(parts.query)["db"] == ["1"]
