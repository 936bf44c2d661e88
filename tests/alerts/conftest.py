from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _file_email_backend(settings):  # noqa: ANN001, ANN202 - pytest-django fixture
    """Send through the project's default file backend (the test runner would swap in locmem)."""
    settings.EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
