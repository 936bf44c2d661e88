"""The OpenAPI schema generates without warnings and validates against the OpenAPI 3 specification."""

from __future__ import annotations

from pathlib import Path

import yaml
from django.core.management import call_command


def test_schema_generates_without_warnings_and_validates(tmp_path: Path) -> None:
    target = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target))
    schema = yaml.safe_load(target.read_text())
    assert schema["openapi"].startswith("3.") and "tokenAuth" in schema["components"]["securitySchemes"]
    components = schema["components"]["schemas"]
    assert "AlertStatusEnum" in components, "enum names come from ENUM_NAME_OVERRIDES, not hashes"
