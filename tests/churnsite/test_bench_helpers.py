"""The benchmarks' scratch helpers: no developer database reached through .env, folders under the configured ones."""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _scratch():  # noqa: ANN202 - the bench module
    spec = importlib.util.spec_from_file_location("bench_scratch", ROOT / "bench" / "_scratch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_service_variables_are_blanked_so_that_a_dotenv_cannot_bring_them_back() -> None:
    environment = {"DATABASE_URL": "postgres://dev/crm", "REDIS_URL": "redis://dev", "OTHER": "kept"}
    _scratch().without_services(environment)
    # Blank, not removed: django-environ's read_env(overwrite=False) only fills variables that are absent.
    assert environment == {"DATABASE_URL": "", "REDIS_URL": "", "CHURN_CACHE_URL": "", "OTHER": "kept"}


def test_directories_follow_the_settings_and_sizes_are_checked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    scratch = _scratch()
    monkeypatch.setenv("CHURN_VAR_DIR", str(tmp_path))
    monkeypatch.delenv("CHURN_CACHE_DIR", raising=False)
    assert (scratch.var_dir(), scratch.cache_dir()) == (tmp_path, tmp_path / "cache")
    monkeypatch.setenv("CHURN_CACHE_DIR", "var/elsewhere")  # relative: from the project, as the settings take it
    assert scratch.cache_dir() == ROOT / "var" / "elsewhere"
    with pytest.raises(argparse.ArgumentTypeError, match="at least 1"):
        scratch.at_least(1)("0")
    assert scratch.at_least(0)("0") == 0


def test_a_bench_without_the_shared_data_says_so_in_one_line(tmp_path: Path) -> None:
    # A copy of the bench in a project without shared data beside it (ml imported from this checkout).
    bench = tmp_path / "project" / "bench"
    bench.mkdir(parents=True)
    for name in ("nested_stacking.py", "_scratch.py"):
        shutil.copy(ROOT / "bench" / name, bench / name)
    done = subprocess.run(
        [sys.executable, str(bench / "nested_stacking.py"), "telco", "--folds", "1"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode != 0 and "does not exist" in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and str(tmp_path / "shared" / "data") in done.stderr


def test_a_scratch_django_uses_its_own_sqlite_database_and_leaves_no_folder(tmp_path: Path) -> None:
    code = (
        "import os, sys; sys.path.insert(0, 'bench'); from _scratch import scratch_django; "
        "scratch = scratch_django('churn-test-scratch-'); from django.conf import settings; "
        "print(scratch, settings.DATABASES['default']['ENGINE'], settings.DATABASES['default']['NAME'], "
        "repr(os.environ['DATABASE_URL']), repr(os.environ['REDIS_URL']), settings.CELERY_TASK_ALWAYS_EAGER)"
    )
    environment = {**os.environ, "DATABASE_URL": "postgres://developer@db.example/crm", "REDIS_URL": "redis://x/0"}
    environment.pop("CHURN_BENCH_KEEP", None)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT, env=environment
    )
    assert done.returncode == 0, done.stderr[-2000:]
    scratch, engine, name, database_url, redis_url, eager = done.stdout.split()[-6:]
    # Blank, not removed (a removed one would come back from a .env), and the database in the scratch folder.
    assert (engine, database_url, redis_url, eager) == ("django.db.backends.sqlite3", "''", "''", "True")
    assert name.startswith(scratch)
    assert not Path(scratch).exists()  # removed at exit
