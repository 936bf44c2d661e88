"""Forging a model artifact in tests: replace a file and re-sign the manifest so the two still agree.

That is what the manifest alone cannot detect (and what the registry's recorded checksums do).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path


def rewrite_and_resign(directory: Path, name: str, data: bytes) -> None:
    """Write ``data`` as ``name`` and record its sha256 and size in ``manifest.json``."""
    (directory / name).write_bytes(data)
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    (directory / "manifest.json").write_text(json.dumps(manifest))


def edit_metadata_and_resign(directory: Path, change: Callable[[dict], object]) -> None:
    """Apply ``change`` to ``metadata.json`` (in place) and re-sign the manifest."""
    metadata = json.loads((directory / "metadata.json").read_text())
    change(metadata)
    rewrite_and_resign(directory, "metadata.json", json.dumps(metadata).encode())
