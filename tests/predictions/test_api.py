from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from customers.models import Customer
from predictions.models import ModelVersion
from predictions.selectors import champion_model_version
from tests.predictions.conftest import train

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def staff() -> APIClient:
    client = APIClient()
    client.force_authenticate(get_user_model().objects.create_superuser("ops", "ops@example.com", "pw-ops-12345"))
    return client


def test_realtime_score_returns_probability_tier_model_and_factors(store: None, staff: APIClient) -> None:  # noqa: ARG001
    version = ModelVersion.objects.get(training_run=train())
    customer = Customer.objects.order_by("id").first()
    response = staff.post(f"/api/v1/customers/{customer.pk}/score")
    body = response.json()
    assert response.status_code == 200, body
    assert 0 <= body["probability"] <= 1 and body["risk_tier"] in {"low", "medium", "high"}
    assert body["model_version"] == version.name and body["top_factors"][0]["factor"]
    # Read as a score row is: the external id under customer_external_id (customer is the external id here too,
    # as it always was, where a score row's customer is the id).
    assert body["customer_external_id"] == body["customer"] == customer.external_id


def test_realtime_score_without_a_champion_is_503_with_a_reason(staff: APIClient) -> None:
    customer = Customer.objects.create(external_id="c1")
    response = staff.post(f"/api/v1/customers/{customer.pk}/score")
    assert response.status_code == 503 and "no champion" in response.json()["error"]["message"]


def test_promote_and_rollback_through_the_api(store: None, staff: APIClient) -> None:  # noqa: ARG001
    first = ModelVersion.objects.get(training_run=train())
    second = ModelVersion.objects.get(training_run=train(horizon_days=45))
    assert staff.post(f"/api/v1/model-versions/{second.pk}/promote").status_code == 200
    assert champion_model_version() == second
    response = staff.post("/api/v1/model-versions/rollback")
    assert response.status_code == 200 and response.json()["name"] == first.name
    assert champion_model_version() == first


def test_registry_endpoints_refuse_anonymous_callers() -> None:
    client = APIClient()
    for method, url in [
        ("get", "/api/v1/model-versions/"),
        ("post", "/api/v1/model-versions/rollback"),
        ("get", "/api/v1/scores/"),
    ]:
        assert getattr(client, method)(url).status_code in {401, 403}, url


@pytest.mark.parametrize("zone", ["America/New_York", "Asia/Kolkata"])
@pytest.mark.parametrize("given", ["2026-03-08", "2026-03-08T00:00:00"])
def test_a_training_as_of_without_an_offset_is_utc_as_churn_train_reads_it(
    staff: APIClient, settings: object, zone: str, given: str
) -> None:
    # The site's zone made the same string 05:00Z in New York and 18:30Z the day before in Kolkata.
    from datetime import UTC, datetime

    from predictions.management.commands.churn_train import parse_as_of
    from predictions.models import TrainingRun

    settings.TIME_ZONE = zone  # type: ignore[attr-defined]
    response = staff.post("/api/v1/training-runs/", {"mode": "lightgbm", "as_of": given}, format="json")

    assert response.status_code == 202, response.json()
    assert TrainingRun.objects.get().as_of == parse_as_of(given) == datetime(2026, 3, 8, tzinfo=UTC)
    assert response.json()["as_of"] == "2026-03-08T00:00:00Z"


def test_a_training_run_names_the_model_version_it_made_and_the_version_its_run(staff: APIClient) -> None:
    # A client that requested a run and polled it to "succeeded" could not tell which model version to promote: the
    # run did not name it, nor the version its run (the name's "-run<N>" was the only link).
    from datetime import UTC, datetime

    from predictions.models import TrainingRun

    pending = TrainingRun.objects.create(mode="lightgbm", as_of=datetime(2026, 3, 8, tzinfo=UTC), horizon_days=30)
    done = TrainingRun.objects.create(
        mode="lightgbm", as_of=datetime(2026, 3, 8, tzinfo=UTC), horizon_days=30, status="succeeded"
    )
    version = ModelVersion.objects.create(
        name="lightgbm-run2", model_type="lightgbm", status="ready", training_run=done
    )

    runs = {row["id"]: row for row in staff.get("/api/v1/training-runs/").json()["results"]}
    assert (runs[done.pk]["model_version"], runs[done.pk]["model_version_id"]) == ("lightgbm-run2", version.pk)
    assert (runs[pending.pk]["model_version"], runs[pending.pk]["model_version_id"]) == (None, None)
    assert staff.get(f"/api/v1/model-versions/{version.pk}/").json()["training_run"] == done.pk
    listed = staff.get("/api/v1/model-versions/").json()["results"]
    assert [row["training_run"] for row in listed] == [done.pk]
