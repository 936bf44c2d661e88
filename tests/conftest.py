"""Shared fixtures.

Service tests (marker ``services``) talk to the real PostgreSQL and Redis named by
``DATABASE_URL`` and ``REDIS_URL``. Without them they skip and say why; with
``CHURN_REQUIRE_SERVICES=1`` (set by .ci/run) a missing service or a skipped service test fails.
"""

from __future__ import annotations

import os

import pytest

from churnsite.celery import app as celery_app

SERVICES_CONFIGURED = os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")) and bool(
    os.environ.get("REDIS_URL")
)
SERVICES_REQUIRED = os.environ.get("CHURN_REQUIRE_SERVICES") == "1"
SKIP_REASON = (
    "needs the real services: set DATABASE_URL=postgres://postgres@127.0.0.1:5432/test and "
    "REDIS_URL=redis://127.0.0.1:6379/0 (.ci/run does, and makes these tests mandatory)"
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if SERVICES_CONFIGURED:
        return
    if SERVICES_REQUIRED:
        raise pytest.UsageError(f"CHURN_REQUIRE_SERVICES=1 but the services are not configured: {SKIP_REASON}")
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if "services" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # noqa: ANN201 - pytest hook
    report = yield
    if SERVICES_REQUIRED and report.skipped and "services" in item.keywords:
        report.outcome = "failed"
        report.longrepr = f"service test skipped in CI, where it is mandatory: {item.nodeid}"
    return report


@pytest.fixture(autouse=True)
def _celery_eager_by_default(request: pytest.FixtureRequest):
    """Unit tests run tasks in-process; service tests use a real broker and worker instead."""
    eager = "services" not in request.keywords
    previous = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = eager
    yield
    celery_app.conf.task_always_eager = previous


@pytest.fixture(autouse=True)
def _var_dir_emails(settings, tmp_path):  # noqa: ANN001 - pytest-django fixture
    """Emails from the file backend go to a per-test folder, never into the developer's var/."""
    settings.EMAIL_FILE_PATH = tmp_path / "emails"


@pytest.fixture(autouse=True)
def _scores_of_fixed_dates_raise_alerts(settings):  # noqa: ANN001 - pytest-django fixture
    """Test stores sit at fixed past dates, which the backfill guard (a scoring run of a date well before it ran
    raises no alert) would treat as backfills; its own tests set ALERTS_MAX_SCORE_AGE_DAYS back."""
    settings.ALERTS_MAX_SCORE_AGE_DAYS = None


@pytest.fixture(autouse=True)
def _private_cache(settings, request):  # noqa: ANN001 - pytest-django fixture
    """Each test gets an empty in-process cache (throttling counters), never the shared Redis one."""
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": request.node.nodeid}
    }
