"""Every API serializer lists its fields, and scores, consent and staff flags are never writable through it."""

from __future__ import annotations

import inspect

import pytest
from rest_framework import serializers

import alerts.serializers
import customers.serializers
import predictions.serializers

PROTECTED = {"probability", "risk_tier", "top_factors", "marketing_consent", "opted_out_at", "is_staff", "is_superuser"}
SERIALIZERS = [
    cls
    for module in (customers.serializers, predictions.serializers, alerts.serializers)
    for _, cls in inspect.getmembers(module, inspect.isclass)
    if issubclass(cls, serializers.ModelSerializer) and cls.__module__ == module.__name__
]


def test_the_apps_have_model_serializers() -> None:
    assert len(SERIALIZERS) >= 8


@pytest.mark.parametrize("serializer_class", SERIALIZERS, ids=lambda cls: cls.__name__)
def test_model_serializer_lists_its_fields_and_protects_scores_and_consent(serializer_class: type) -> None:
    meta = serializer_class.Meta
    assert isinstance(meta.fields, list | tuple), f"{serializer_class.__name__}.Meta.fields must be a list"
    assert not hasattr(meta, "exclude"), f"{serializer_class.__name__} uses exclude"
    writable = {name for name, field in serializer_class().fields.items() if not field.read_only}
    assert not writable & PROTECTED, f"{serializer_class.__name__} lets clients write {sorted(writable & PROTECTED)}"
