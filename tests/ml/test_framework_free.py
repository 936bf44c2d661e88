"""ml/ must import nothing from Django, DRF, Celery or the project's apps (import-linter checks it too)."""

from __future__ import annotations

import ast
from pathlib import Path

FORBIDDEN = {"django", "rest_framework", "celery", "kombu", "churnsite", "customers", "predictions", "alerts"}
ML_DIR = Path(__file__).resolve().parents[2] / "ml"


def test_ml_imports_no_framework_or_project_app() -> None:
    offenders = []
    for path in sorted(ML_DIR.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            offenders += [
                f"{path.relative_to(ML_DIR.parent)}:{node.lineno} imports {n}"
                for n in names
                if n.split(".")[0] in FORBIDDEN
            ]
    assert not offenders, offenders
