"""Model versions for tests that promote or roll back without training: a champion must have its artifact
directory on disk (promotion refuses one whose files are gone), so these get an empty one."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

_ROOT = Path(tempfile.mkdtemp(prefix="churnsite-test-artifacts-"))
atexit.register(shutil.rmtree, _ROOT, ignore_errors=True)


def artifact_dir() -> str:
    """A new, empty artifact directory (no recorded files, so nothing is missing from it)."""
    return tempfile.mkdtemp(dir=_ROOT)
