"""Shared checks of management command arguments."""

from __future__ import annotations

import os
from pathlib import Path

from django.core.management.base import CommandError


def output_file(value: str | os.PathLike[str], *, option: str) -> Path:
    """The file a command writes when its work is done (a report, JSON results), checked before the work starts:
    not a directory, and its nearest existing folder writable (missing folders are created when writing)."""
    path = Path(value)
    if path.is_dir():
        raise CommandError(f"{option} {path} is a directory: give a file name")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise CommandError(f"{option} {path}: {folder} is not a directory")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CommandError(f"{option} {path}: no permission to write in {folder}")
    if path.exists() and not os.access(path, os.W_OK):
        raise CommandError(f"{option} {path}: no permission to replace it")
    return path


def write_output(path: Path, text: str, *, option: str) -> None:
    """Write ``text`` to ``path`` (creating its folders); an OSError becomes a CommandError naming the option."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise CommandError(f"{option} {path}: {exc.strerror or exc}") from exc
