"""Requests that used to end in a 500 (most only on PostgreSQL) or that were accepted though they could not work.

Found by an audit of the API layer; each test failed before its fix.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction
from rest_framework.test import APIClient

from alerts.models import AlertRule
from customers.models import Customer
from predictions.models import ModelVersion

pytestmark = pytest.mark.django_db


def _error(response) -> dict:  # noqa: ANN001
    return response.json()["error"]


@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        ("/api/v1/customers/?q=a%00b", "q"),
        ("/api/v1/customers/?segment=%00", "segment"),
        ("/api/v1/scores/?customer_external_id=%00", "customer_external_id"),
        ("/api/v1/alerts/?segment=%00", "segment"),
    ],
)
def test_a_nul_character_in_a_query_parameter_is_a_400_that_names_it(
    staff: APIClient, path: str, parameter: str
) -> None:
    response = staff.get(path)
    assert response.status_code == 400
    assert parameter in _error(response)["fields"] and "NUL" in _error(response)["message"]


def test_a_nul_character_in_a_path_is_a_400_for_the_api_and_the_admin(staff: APIClient) -> None:
    assert staff.post("/api/v1/customers/by-external-id/a%00b/score").status_code == 400
    admin = staff.get("/admin/customers/customer/?q=a%00b")
    assert admin.status_code == 400 and b"NUL" in admin.content


def test_json_bodies_with_nul_characters_or_nested_too_deeply_are_400s(staff: APIClient) -> None:
    nul = staff.post("/api/v1/alert-rules/", b'{"name":"r","segments":["vip\\u0000"]}', content_type="application/json")
    assert nul.status_code == 400 and _error(nul)["code"] == "parse_error" and "segments[0]" in _error(nul)["message"]
    key = staff.post(
        "/api/v1/alert-rules/",
        b'{"name":"r","attribute_filters":{"pl\\u0000an":"gold"}}',
        content_type="application/json",
    )
    assert key.status_code == 400 and "key of attribute_filters" in _error(key)["message"]
    deep = b'{"name":"r","segments":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    nested = staff.post("/api/v1/alert-rules/", deep, content_type="application/json")
    assert nested.status_code == 400 and "nested too deeply" in _error(nested)["message"]
    assert not AlertRule.objects.exists()


@pytest.mark.parametrize("value", ["%C2%B2", "1" * 4301, "0", "-3"])
def test_ids_in_query_parameters_that_are_not_ascii_whole_numbers_are_400s(staff: APIClient, value: str) -> None:
    for path in ("/api/v1/scores/", "/api/v1/interventions/", "/api/v1/alerts/"):
        response = staff.get(f"{path}?customer={value}")
        assert response.status_code == 400 and "customer" in _error(response)["fields"], path


def test_ingestion_turns_out_of_range_times_and_deep_json_into_row_errors(service: APIClient) -> None:
    body = (
        b'[{"customer_id":"ok-1"},{"customer_id":"c2","signed_up_at":"9999-12-31T23:59:59-12:00"},'
        b'{"customer_id":"c3","signed_up_at":"0001-01-01T00:00:00+14:00"}]'
    )
    response = service.post("/api/v1/ingest/customers", body, content_type="application/json")
    assert response.status_code == 200, response.content
    errors = response.json()["errors"]
    assert [(e["row"], e["field"]) for e in errors] == [(2, "signed_up_at"), (3, "signed_up_at")]
    assert "out of range" in errors[0]["reason"]
    assert set(Customer.objects.values_list("external_id", flat=True)) == {"ok-1"}
    deep = b'[{"customer_id":"ok-2"},' + b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"]"
    nested = service.post("/api/v1/ingest/customers", deep, content_type="application/json")
    assert nested.status_code in (200, 400), nested.content
    assert any("nested too deeply" in e["reason"] for e in nested.json()["errors"])


@pytest.mark.parametrize("zone", ["America", "A" * 300])
def test_a_time_zone_that_is_a_directory_or_too_long_is_a_400(service: APIClient, zone: str) -> None:
    response = service.post(
        f"/api/v1/ingest/customers?time_zone={zone}", b'[{"customer_id":"c1"}]', content_type="application/json"
    )
    assert response.status_code == 400 and "unknown time zone" in _error(response)["message"]


@pytest.mark.parametrize("field", ["budget", "coupon_cost", "min_customer_value"])
def test_alert_rules_refuse_negative_money_in_the_api_and_the_database(staff: APIClient, field: str) -> None:
    response = staff.post("/api/v1/alert-rules/", {"name": "neg", "threshold": 0.5, field: "-1.00"}, format="json")
    assert response.status_code == 400 and field in _error(response)["fields"]
    with pytest.raises(IntegrityError), transaction.atomic():
        AlertRule.objects.create(name="neg", **{field: Decimal("-1.00")})


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"mode": "xgboost", "horizon_days": 60}, "mode"),
        ({"mode": "lightgbm", "horizon_days": 1_000_000_000}, "horizon_days"),
        ({"mode": "lightgbm", "horizon_days": 0}, "horizon_days"),
        ({"mode": "lightgbm", "horizon_days": 60, "lead_days": 10**9}, "lead_days"),
        ({"mode": "lightgbm", "horizon_days": 60, "as_of": "0001-01-01T00:00:00Z"}, "as_of"),
    ],
)
def test_a_training_request_that_can_never_train_is_a_400(staff: APIClient, body: dict, field: str) -> None:
    response = staff.post("/api/v1/training-runs/", body, format="json")
    assert response.status_code == 400 and field in _error(response)["fields"], response.content


def test_the_customer_export_answers_a_client_that_asks_for_csv(staff: APIClient) -> None:
    Customer.objects.create(external_id="c1")
    response = staff.get("/api/v1/customers/export.csv", HTTP_ACCEPT="text/csv")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert b"c1" in b"".join(response.streaming_content)
    bad = staff.get("/api/v1/customers/export.csv?churned=maybe", HTTP_ACCEPT="text/csv")
    assert bad.status_code == 400 and "churned" in _error(bad)["fields"]


@pytest.mark.parametrize("name", ["churned", "marketing_consent", "opted_out", "is_minimal"])
def test_a_bad_customer_filter_is_a_400_that_names_the_parameter(staff: APIClient, name: str) -> None:
    response = staff.get(f"/api/v1/customers/?{name}=maybe")
    assert response.status_code == 400 and _error(response)["code"] == "invalid"
    assert name in _error(response)["fields"]
    customer = Customer.objects.create(external_id="c1")
    timeline = staff.get(f"/api/v1/customers/{customer.pk}/?timeline_limit=ten")
    assert timeline.status_code == 400 and "timeline_limit" in _error(timeline)["fields"]


def test_the_real_time_score_does_not_show_service_clients_server_paths(service: APIClient, tmp_path) -> None:  # noqa: ANN001
    hidden = tmp_path / "srv-internal" / "models" / "champion-1"
    ModelVersion.objects.create(name="champ", model_type="lightgbm", status="champion", artifact_path=str(hidden))
    customer = Customer.objects.create(external_id="c1")
    response = service.post(f"/api/v1/customers/{customer.pk}/score")
    assert response.status_code == 503 and "cannot be loaded" in _error(response)["message"]
    assert "srv-internal" not in response.content.decode()


def test_a_rule_name_taken_between_validation_and_insert_is_a_400_not_a_500(
    staff: APIClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from alerts import services

    AlertRule.objects.create(name="winback")
    # The race: both requests passed validation before either inserted. Skip validation to stand in for it.
    monkeypatch.setattr(AlertRule, "full_clean", lambda self, *a, **k: None)
    monkeypatch.setattr(services.AlertRule, "full_clean", lambda self, *a, **k: None)
    from alerts.serializers import AlertRuleSerializer

    monkeypatch.setattr(AlertRuleSerializer, "validate_name", lambda self, value: value, raising=False)
    for validator in list(AlertRuleSerializer().fields["name"].validators):
        monkeypatch.setattr(type(validator), "__call__", lambda self, *a, **k: None, raising=False)
    response = staff.post("/api/v1/alert-rules/", {"name": "winback", "threshold": 0.5}, format="json")
    assert response.status_code == 400 and "name" in _error(response)["fields"], response.content
    assert AlertRule.objects.filter(name="winback").count() == 1
