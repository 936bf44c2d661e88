"""Django for a benchmark in a scratch folder: its own SQLite database and var directory, no Redis."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def scratch_django(prefix: str, **environment: str) -> Path:
    """Point ``CHURN_VAR_DIR`` at a new temporary folder, drop ``DATABASE_URL`` and ``REDIS_URL`` (so the embedded
    SQLite database and Celery setup are used), apply ``environment`` and run ``django.setup()``.

    Returns:
        The scratch folder.
    """
    scratch = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ.update({"CHURN_VAR_DIR": str(scratch), **environment})
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("REDIS_URL", None)
    os.environ["DJANGO_SETTINGS_MODULE"] = "churnsite.settings"
    import django

    django.setup()
    return scratch
