"""Headless Chromium for the browser tests: Debian's ``chromium`` and ``chromium-driver`` packages, driven by
Selenium with the driver's path given, so that Selenium Manager downloads nothing.

``make test`` installs both packages (``make browser-deps``). Where they are still missing the tests skip and
say why; with ``CHURN_REQUIRE_SERVICES=1`` (CI, .ci/run) such a skip fails instead, as service tests do.
Screenshots go to ``test-artifacts/browser/`` (ignored by git).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services import PROJECT_ROOT

# As for service tests (tests/conftest.py): CI sets it, and then a browser test that skips fails.
SERVICES_REQUIRED = os.environ.get("CHURN_REQUIRE_SERVICES") == "1"

CHROMIUM = Path(os.environ.get("CHURN_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("CHURN_CHROMEDRIVER", "/usr/bin/chromedriver"))
SCREENSHOTS = PROJECT_ROOT / "test-artifacts" / "browser"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1680,1000",
)


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not (path.is_file() and os.access(path, os.X_OK)):
            return (
                f"{path} not found: `make test` installs Debian's {package} package with apt-get, which was not "
                "possible here (no apt-get, not root and no sudo, or no Debian mirror)"
            )
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "the selenium package is not installed: .venv/bin/pip install -e '.[dev]'"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = browser_missing()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=f"headless Chromium unavailable: {reason}")
    for item in items:
        if "browser" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # noqa: ANN201 - pytest hook
    report = yield
    if SERVICES_REQUIRED and report.skipped and "browser" in item.keywords:
        report.outcome = "failed"
        report.longrepr = f"browser test skipped in CI, where it is mandatory ({browser_missing()}): {item.nodeid}"
    return report


@pytest.fixture
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


@pytest.fixture
def chromium(tmp_path: Path, screenshots: Path) -> Iterator[object]:
    """A headless Chromium WebDriver with a fresh profile; its driver log is kept beside the screenshots."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(screenshots / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)
