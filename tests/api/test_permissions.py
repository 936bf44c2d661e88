"""Deny by default: who may call which operation of the schema."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tests.api.conftest import api_data, concrete, schema_operations

pytestmark = pytest.mark.django_db

OPERATIONS = schema_operations()
# What a service client may do: read scores and alerts, ingest, request a real-time score.
SERVICE_CLIENT_OPERATIONS = {
    ("get", "/api/v1/scores/"),
    ("get", "/api/v1/alerts/"),
    ("get", "/api/v1/alerts/{id}/"),
    ("post", "/api/v1/customers/{id}/score"),
    ("post", "/api/v1/customers/by-external-id/{external_id}/score"),
    ("post", "/api/v1/ingest/{kind}"),
}


def test_schema_lists_every_api_area() -> None:
    paths = {path for _, path in OPERATIONS}
    expected = {
        "/api/v1/customers/",
        "/api/v1/customers/{id}/",
        "/api/v1/scores/",
        "/api/v1/customers/{id}/score",
        "/api/v1/alerts/",
        "/api/v1/interventions/",
        "/api/v1/interventions/{id}/",
        "/api/v1/alert-rules/",
        "/api/v1/alert-rules/{id}/",
        "/api/v1/model-versions/",
        "/api/v1/model-versions/{id}/",
        "/api/v1/model-versions/{id}/promote",
        "/api/v1/model-versions/rollback",
        "/api/v1/ingest/{kind}",
    }
    assert expected <= paths, f"missing from the schema: {sorted(expected - paths)}"
    assert SERVICE_CLIENT_OPERATIONS <= set(OPERATIONS)


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_every_operation_refuses_a_caller_without_credentials(method: str, path: str) -> None:
    response = getattr(APIClient(), method)(concrete(path))
    assert response.status_code in (401, 403), f"{method.upper()} {path} answered {response.status_code}"
    assert response.json()["error"]["code"] in ("not_authenticated", "permission_denied")


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_service_client_reaches_only_its_operations(service: APIClient, method: str, path: str) -> None:
    response = getattr(service, method)(concrete(path), {}, format="json")
    if (method, path) in SERVICE_CLIENT_OPERATIONS:
        assert response.status_code not in (401, 403), f"{method.upper()} {path} refused a service client"
    else:
        assert response.status_code == 403, f"{method.upper()} {path} answered {response.status_code}"


def test_service_client_may_read_an_alert_but_not_change_it(service: APIClient) -> None:
    alert = api_data()["alert"]
    assert service.get(f"/api/v1/alerts/{alert.pk}/").status_code == 200
    assert service.patch(f"/api/v1/alerts/{alert.pk}/", {"notes": "x"}, format="json").status_code == 403


def test_invalid_token_is_401_with_the_error_envelope() -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    response = client.get("/api/v1/scores/")
    assert response.status_code == 401 and response.json()["error"]["code"] == "authentication_failed"


def test_staff_session_writes_need_the_csrf_token(staff_user) -> None:  # noqa: ANN001
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(staff_user)
    assert client.get("/api/v1/alert-rules/").status_code == 200
    response = client.post("/api/v1/alert-rules/", {"name": "r", "threshold": 0.5}, format="json")
    assert response.status_code == 403 and "CSRF" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", '[{"customer_id": "c1", "amount": "10", "date": "2025-01-05"}]'),
        ("application/x-ndjson", '{"customer_id": "c1", "amount": "10", "date": "2025-01-05"}\n'),
        ("text/csv", "customer_id,amount,date\nc1,10,2025-01-05\n"),
    ],
)
def test_staff_can_send_ingestion_bodies_with_their_session_and_csrf_token(staff_user, content_type, body) -> None:  # noqa: ANN001
    # The CSRF check reads request.POST, which made DRF look for a parser of the body and answer 415.
    from django.middleware.csrf import _get_new_csrf_string, _mask_cipher_secret

    client = APIClient(enforce_csrf_checks=True)
    client.force_login(staff_user)
    secret = _get_new_csrf_string()
    client.cookies["csrftoken"] = secret
    response = client.post(
        "/api/v1/ingest/orders", body, content_type=content_type, HTTP_X_CSRFTOKEN=_mask_cipher_secret(secret)
    )

    assert response.status_code == 200, response.content
    assert response.json()["rows_imported"] == 1
    assert client.post("/api/v1/ingest/orders", body, content_type=content_type).status_code == 403  # no token


def test_a_logged_in_user_who_is_not_staff_gets_nothing(django_user_model) -> None:  # noqa: ANN001
    client = APIClient()
    client.force_login(django_user_model.objects.create_user("shopper", password="pw-shopper-x"))
    assert client.get("/api/v1/scores/").status_code == 403
    assert client.get("/api/v1/schema/").status_code == 403


def test_schema_and_docs_are_served_to_clients_without_a_cdn(staff: APIClient, service: APIClient) -> None:
    assert APIClient().get("/api/v1/schema/").status_code in (401, 403)
    assert service.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").status_code == 200
    page = staff.get("/api/v1/docs/").content.decode()
    assert "swagger-ui" in page and "/static/drf_spectacular_sidecar/" in page
    assert "cdn" not in page.lower() and "unpkg" not in page.lower()
    redoc = staff.get("/api/v1/redoc/").content.decode()
    assert "/static/drf_spectacular_sidecar/" in redoc and "redoc" in redoc.lower()
    assert "https://" not in redoc, "the ReDoc page loads something from another site (it loaded Google Fonts)"


# The schema and its docs describe the API; every other operation needs a Django model permission, as in the admin.
DESCRIBES_THE_API = {("get", "/api/v1/schema/")}


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_staff_without_the_operations_permission_are_refused_naming_it(
    django_user_model, method: str, path: str
) -> None:  # noqa: ANN001
    client = APIClient()
    client.force_login(django_user_model.objects.create_user("intern", password="pw-intern-x", is_staff=True))
    response = getattr(client, method)(concrete(path), {}, format="json")
    if (method, path) in DESCRIBES_THE_API:
        assert response.status_code == 200
    else:
        assert response.status_code == 403, f"{method.upper()} {path} answered {response.status_code}"
        assert "needs the permission " in response.json()["error"]["message"]


def test_staff_reach_what_their_permissions_allow_and_nothing_more(django_user_model) -> None:  # noqa: ANN001
    from django.contrib.auth.models import Permission

    data = api_data()
    user = django_user_model.objects.create_user("analyst", password="pw-analyst-x", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=["view_modelversion", "view_customer"]))
    client = APIClient()
    client.force_login(user)
    version = data["run"].model_version
    assert client.get("/api/v1/model-versions/").status_code == 200
    assert client.get("/api/v1/customers/export.csv").status_code == 200
    promote = client.post(f"/api/v1/model-versions/{version.pk}/promote")
    assert promote.status_code == 403
    assert "predictions.change_modelversion" in promote.json()["error"]["message"]
    assert client.post("/api/v1/training-runs/", {}, format="json").status_code == 403
    assert client.get("/api/v1/alerts/").status_code == 403
    orders = client.post("/api/v1/ingest/orders", [], format="json")
    assert orders.status_code == 403 and "customers.add_order" in orders.json()["error"]["message"]
    user.user_permissions.add(Permission.objects.get(codename="add_order"))
    client.force_login(type(user).objects.get(pk=user.pk))
    placeholders = client.post("/api/v1/ingest/orders", [], format="json")  # unknown customers get placeholders
    assert placeholders.status_code == 403 and "customers.add_customer" in placeholders.json()["error"]["message"]
