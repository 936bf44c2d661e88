from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from churnsite.celery import QUEUE_NAMES
from churnsite.celery import app as celery_app

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIG_VARIABLES = (
    "DATABASE_URL",
    "REDIS_URL",
    "CHURN_CACHE_URL",
    "DJANGO_DEBUG",
    "DJANGO_SECRET_KEY",
    "ALLOWED_HOSTS",
    "CHURN_VAR_DIR",
)


def _manage(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in CONFIG_VARIABLES and not k.startswith("CELERY_")}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT_ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_no_configuration_runs_on_sqlite_in_var_dir_with_eager_celery(tmp_path: Path) -> None:
    code = (
        "from django.conf import settings as s; "
        "print(s.DATABASES['default']['ENGINE'], s.DATABASES['default']['NAME'], s.DEBUG, "
        "s.CELERY_TASK_ALWAYS_EAGER, s.CELERY_BROKER_URL, s.EMAIL_FILE_PATH)"
    )
    result = _manage("shell", "-v0", "-c", code, env={"CHURN_VAR_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "django.db.backends.sqlite3",
        str(tmp_path / "churnsite.sqlite3"),
        "True",
        "True",
        "filesystem://localhost//",
        str(tmp_path / "emails"),
    ]


def test_production_settings_pass_check_deploy_without_warnings(tmp_path: Path) -> None:
    env = {
        "CHURN_VAR_DIR": str(tmp_path),
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(64),
        "ALLOWED_HOSTS": "churn.example.com",
        "REDIS_URL": "redis://127.0.0.1:6379/0",
    }
    result = _manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert result.returncode == 0 and "no issues" in result.stdout, result.stdout + result.stderr


def test_production_refuses_to_start_without_a_secret_key(tmp_path: Path) -> None:
    result = _manage("check", env={"CHURN_VAR_DIR": str(tmp_path), "DJANGO_DEBUG": "false"})
    assert result.returncode != 0 and "DJANGO_SECRET_KEY" in result.stderr, result.stderr[-2000:]


def test_an_unknown_encoder_quantisation_is_refused_at_start(tmp_path: Path) -> None:
    result = _manage("check", env={"CHURN_VAR_DIR": str(tmp_path), "CHURN_ENCODER_QUANTIZE": "int4"})
    assert result.returncode != 0 and "CHURN_ENCODER_QUANTIZE must be none or int8" in result.stderr, result.stderr


def test_celery_accepts_json_only_and_declares_the_three_queues() -> None:
    conf = celery_app.conf
    assert (conf.task_serializer, conf.result_serializer, list(conf.accept_content)) == ("json", "json", ["json"])
    assert sorted(q.name for q in conf.task_queues) == sorted(QUEUE_NAMES)


def test_every_project_task_has_a_name_queue_and_time_limits_below_the_visibility_timeout(settings) -> None:  # noqa: ANN001
    celery_app.loader.import_default_modules()
    ours = {
        name: task
        for name, task in celery_app.tasks.items()
        if name.split(".")[0] in {"customers", "predictions", "alerts"}
    }
    assert ours, "no project tasks registered"
    visibility = 2 * settings.CHURN_TRAIN_TIME_LIMIT
    problems = [
        f"{name}: queue={task.queue!r} soft={task.soft_time_limit} hard={task.time_limit}"
        for name, task in ours.items()
        if task.queue not in QUEUE_NAMES
        or not task.time_limit
        or not task.soft_time_limit
        or task.time_limit >= visibility
    ]
    assert not problems, problems


def test_secrets_are_read_as_given_hosts_are_stripped_and_empty_variables_count_as_unset(tmp_path: Path) -> None:
    code = (
        "from django.conf import settings as s; "
        "print(repr(s.SECRET_KEY), repr(s.EMAIL_HOST_PASSWORD), s.ALLOWED_HOSTS, s.CSRF_TRUSTED_ORIGINS, "
        "s.DATABASES['default']['NAME'])"
    )
    env = {
        "CHURN_VAR_DIR": str(tmp_path),
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": "$ecret-" + "x" * 50,
        "EMAIL_HOST_PASSWORD": "$mtp-pass",
        "ALLOWED_HOSTS": "churn.example.com, www.churn.example.com ,",
        "CSRF_TRUSTED_ORIGINS": "https://churn.example.com, https://www.churn.example.com",
        "DATABASE_URL": "",
    }
    result = _manage("shell", "-v0", "-c", code, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        f"'$ecret-{'x' * 50}' '$mtp-pass' ['churn.example.com', 'www.churn.example.com'] "
        f"['https://churn.example.com', 'https://www.churn.example.com'] {tmp_path / 'churnsite.sqlite3'}"
    )
    empty_var_dir = _manage(
        "shell", "-v0", "-c", "from django.conf import settings as s; print(s.VAR_DIR)", env={"CHURN_VAR_DIR": ""}
    )
    assert empty_var_dir.returncode == 0 and empty_var_dir.stdout.strip() == str(PROJECT_ROOT / "var")


def test_settings_that_cannot_work_stop_the_process_with_a_message_that_names_them(tmp_path: Path) -> None:
    for name, value in (
        ("CHURN_RISK_TIER_CUTS", "0.5"),
        ("CHURN_RISK_TIER_CUTS", "0.6,0.3"),
        ("CHURN_SCORING_CHUNK_SIZE", "0"),
        ("CHURN_DEFAULT_MODE", "xgboost"),
        ("CHURN_HORIZON_DAYS", "0"),
        ("CHURN_HORIZON_DAYS", "4000"),
        ("CHURN_BEAT_LOCK_TTL", "0"),
        ("CHURN_TRAIN_LEASE_POLL_SECONDS", "0"),
        ("CHURN_RECORDS_KEEP_DAYS", "0"),
        ("CHURN_SCORES_KEEP_DAYS", "0"),
        ("CHURN_REDIS_SOCKET_TIMEOUT", "0"),
        ("CHURN_REDIS_CONNECT_TIMEOUT", "-1"),
        ("CHURN_CURRENCY", "dollars"),
        ("CHURN_EXCHANGE_RATES", "JPY"),
        ("CHURN_EXCHANGE_RATES", "EUR=1.08,JPY=-0.0067"),
        ("CHURN_EXCHANGE_RATES", "EURO=1.08"),
        ("API_THROTTLE_USER", "2000/fortnight"),
        ("API_THROTTLE_ANON", "30"),
        ("API_THROTTLE_INGEST", "sixty/minute"),
        ("API_THROTTLE_REALTIME_SCORE", "120/minute/client"),
    ):
        result = _manage("check", env={"CHURN_VAR_DIR": str(tmp_path), name: value})
        assert result.returncode != 0, (name, value)
        assert f"{name} must be" in result.stderr, result.stderr[-500:]


def test_the_cache_never_shares_the_brokers_redis_database(tmp_path: Path) -> None:
    code = "from django.conf import settings as s; print(s.CELERY_BROKER_URL, s.CACHES['default']['LOCATION'])"
    for redis_url, cache_url, expected in (
        ("redis://127.0.0.1:6379/0", "", "redis://127.0.0.1:6379/0 redis://127.0.0.1:6379/1"),
        ("redis://127.0.0.1:6379", "", "redis://127.0.0.1:6379 redis://127.0.0.1:6379/1"),
        ("redis://127.0.0.1:6379/2", "redis://127.0.0.1:6379/7", "redis://127.0.0.1:6379/2 redis://127.0.0.1:6379/7"),
    ):
        env = {"CHURN_VAR_DIR": str(tmp_path), "REDIS_URL": redis_url, "CHURN_CACHE_URL": cache_url}
        result = _manage("shell", "-v0", "-c", code, env=env)
        assert result.returncode == 0, result.stderr[-500:]
        assert result.stdout.strip() == expected
    same = {
        "CHURN_VAR_DIR": str(tmp_path),
        "REDIS_URL": "redis://127.0.0.1:6379",
        "CHURN_CACHE_URL": "redis://127.0.0.1:6379/0",
    }
    result = _manage("check", env=same)
    assert result.returncode != 0 and "CHURN_CACHE_URL must not be the broker's Redis database" in result.stderr


def test_relative_folders_are_taken_from_the_project_directory_in_every_process(tmp_path: Path) -> None:
    code = "from django.conf import settings as s; print(s.VAR_DIR, s.CHURN_ARTIFACT_DIR, s.CHURN_CACHE_DIR)"
    relative = os.path.relpath(tmp_path, PROJECT_ROOT)
    env = {"CHURN_VAR_DIR": relative, "CHURN_ARTIFACT_DIR": f"{relative}/models", "CHURN_CACHE_DIR": ""}
    outputs = set()
    for cwd in (PROJECT_ROOT, tmp_path):  # a worker started from another folder sees the same ones
        result = subprocess.run(
            [sys.executable, str(PROJECT_ROOT / "manage.py"), "shell", "-v0", "-c", code],
            cwd=cwd,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr[-500:]
        outputs.add(result.stdout.strip())
    assert outputs == {f"{tmp_path.resolve()} {tmp_path.resolve() / 'models'} {tmp_path.resolve() / 'cache'}"}


def test_an_empty_variable_of_any_type_counts_as_unset_and_an_unreadable_one_is_named(tmp_path: Path) -> None:
    code = (
        "from django.conf import settings as s; "
        "print(s.DEBUG, s.REST_FRAMEWORK['PAGE_SIZE'], s.CHURN_SCORING_CHUNK_SIZE, s.CHURN_RESCORE_ON_PROMOTION)"
    )
    empty = {"DJANGO_DEBUG": "", "API_PAGE_SIZE": "", "CHURN_SCORING_CHUNK_SIZE": "", "CHURN_RESCORE_ON_PROMOTION": ""}
    result = _manage("shell", "-v0", "-c", code, env={"CHURN_VAR_DIR": str(tmp_path), **empty})
    assert result.returncode == 0, result.stderr[-500:]
    assert result.stdout.split() == ["True", "50", "500", "True"]

    unreadable = _manage("check", env={"CHURN_VAR_DIR": str(tmp_path), "API_PAGE_SIZE": "ten"})
    assert unreadable.returncode != 0 and "API_PAGE_SIZE='ten' cannot be read" in unreadable.stderr


def test_throttle_rates_are_read_as_drf_reads_them(tmp_path: Path) -> None:
    code = "from django.conf import settings as s; print(s.REST_FRAMEWORK['DEFAULT_THROTTLE_RATES']['user'])"
    result = _manage("shell", "-v0", "-c", code, env={"CHURN_VAR_DIR": str(tmp_path), "API_THROTTLE_USER": "50/hours"})
    assert result.returncode == 0, result.stderr[-500:]
    assert result.stdout.strip() == "50/hours"


@pytest.mark.parametrize(
    "environment",
    [{"API_PAGE_SIZE": "0"}, {"API_MAX_PAGE_SIZE": "0"}, {"API_PAGE_SIZE": "-3"}, {"API_PAGE_SIZE": "600"}],
)
def test_page_sizes_that_would_turn_pagination_off_or_exceed_the_maximum_stop_the_process(
    tmp_path: Path, environment: dict[str, str]
) -> None:
    # DRF reads a page size of 0 as "no pagination": every row in one bare list.
    result = _manage("check", env={"CHURN_VAR_DIR": str(tmp_path), **environment})
    assert result.returncode != 0
    assert "API_PAGE_SIZE must be at least 1 and at most API_MAX_PAGE_SIZE" in result.stderr


def test_a_database_server_that_never_answers_fails_the_connection_after_the_connect_timeout(tmp_path: Path) -> None:
    """A PostgreSQL host that accepts TCP but never speaks (a hung server, a half-dead proxy) must not hold a
    process for ever: DATABASE_CONNECT_TIMEOUT (default 10 s) bounds the connection."""
    import socket
    import threading
    import time

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(silent.accept()[0]), daemon=True).start()
    url = f"postgres://nobody@127.0.0.1:{silent.getsockname()[1]}/nothing"
    code = "from django.db import connection\nconnection.ensure_connection()"
    started = time.monotonic()
    try:
        result = _manage(
            "shell", "-v0", "-c", code, env={"CHURN_VAR_DIR": str(tmp_path), "DATABASE_URL": url,
                                              "DATABASE_CONNECT_TIMEOUT": "1"}, timeout=60,
        )  # fmt: skip
    finally:
        silent.close()
        for connection in accepted:
            connection.close()
    assert result.returncode != 0 and "timeout" in result.stderr.lower(), result.stderr[-800:]
    assert time.monotonic() - started < 30
