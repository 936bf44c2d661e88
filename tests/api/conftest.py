"""Clients for the API tests: a staff user, a service client with its token, and nobody."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from churnsite.services import api_client_create
from tests.staff import grant_app_permissions

HTTP_METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture(autouse=True)
def _fresh_throttle_counters() -> None:
    """Throttle counters live in the cache; each test starts with none."""
    cache.clear()


@pytest.fixture
def staff_user():  # noqa: ANN201 - the project's user model
    return grant_app_permissions(
        get_user_model().objects.create_user("ops", password="pw-ops-for-tests", is_staff=True)
    )


@pytest.fixture
def staff(staff_user) -> APIClient:  # noqa: ANN001
    client = APIClient()
    client.force_login(staff_user)
    return client


@pytest.fixture
def service_token() -> str:
    return api_client_create(name="crm-sync").token


@pytest.fixture
def service(service_token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {service_token}")
    return client


def schema_operations() -> list[tuple[str, str]]:
    """(method, path template) of every operation in the generated OpenAPI schema."""
    schema = SchemaGenerator().get_schema(request=None, public=True)
    return sorted((method, path) for path, item in schema["paths"].items() for method in item if method in HTTP_METHODS)


def concrete(path: str) -> str:
    """The path with every {parameter} filled with 1."""
    import re

    return re.sub(r"\{[^}]+\}", "1", path)


def api_data() -> dict[str, object]:
    """A few rows of every kind the API serves: customers with a score and an alert, a rule, a model version."""
    from alerts.models import ActionKind, Alert, AlertRule, TriggerKind
    from alerts.services import alert_rule_apply
    from predictions.models import ChurnScore
    from tests.alerts.helpers import as_of, customer_make, model_version_make, score_make, scoring_run_make

    run = scoring_run_make(model_version_make(), at=as_of())
    customers = [customer_make(n, segment="vip" if n % 2 else "") for n in range(1, 4)]
    for n, customer in enumerate(customers):
        score_make(customer, run, 0.2 + 0.3 * n)
    rule = AlertRule.objects.create(
        name="alert only", trigger=TriggerKind.PROBABILITY, threshold=0.5, action=ActionKind.NONE, holdout_fraction=0
    )
    alert_rule_apply(rule=rule, scores=ChurnScore.objects.all(), actor="test")
    return {"customers": customers, "rule": rule, "alert": Alert.objects.order_by("id").first(), "run": run}
