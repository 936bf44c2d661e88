"""Idempotency-Key on the registry's and training's POSTs: a retried request replays the first answer and does
nothing again (a retried rollback would otherwise undo itself; a retried training request would train twice)."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from predictions.models import ModelAuditEntry, TrainingRun
from predictions.selectors import champion_model_version
from predictions.services import model_version_consider_promotion, model_version_promote
from tests.predictions.test_registry import POLICY, _register

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff() -> APIClient:
    client = APIClient()
    client.force_authenticate(get_user_model().objects.create_superuser("ops", "ops@example.com", "pw-ops-12345"))
    return client


def test_a_retried_rollback_replays_its_answer_instead_of_rolling_back_again(staff: APIClient) -> None:
    first, second, third = _register("m1", 0.80, 0.5), _register("m2", 0.81, 0.5), _register("m3", 0.82, 0.5)
    model_version_consider_promotion(model_version=first, actor="test", policy=POLICY)
    model_version_promote(model_version=second, actor="alice")
    model_version_promote(model_version=third, actor="alice")

    answers = [staff.post("/api/v1/model-versions/rollback", HTTP_IDEMPOTENCY_KEY="rb-1") for _ in range(2)]

    assert [a.status_code for a in answers] == [200, 200]
    assert answers[0].json() == answers[1].json() and answers[0].json()["name"] == "m2"
    assert "Idempotent-Replayed" not in answers[0] and answers[1]["Idempotent-Replayed"] == "true"
    assert champion_model_version() == second
    assert ModelAuditEntry.objects.filter(action="rolled_back").count() == 1
    # With a new key a rollback is a new request, which rolls the first one back: what a replay must not do.
    again = staff.post("/api/v1/model-versions/rollback", HTTP_IDEMPOTENCY_KEY="rb-2")
    assert again.status_code == 200 and again.json()["name"] == "m3" and champion_model_version() == third


def test_a_retried_promotion_replays_and_a_reused_key_is_a_422(staff: APIClient) -> None:
    first, second = _register("m1", 0.80, 0.5), _register("m2", 0.81, 0.5)
    model_version_consider_promotion(model_version=first, actor="test", policy=POLICY)

    answers = [staff.post(f"/api/v1/model-versions/{second.pk}/promote", HTTP_IDEMPOTENCY_KEY="p-1") for _ in "ab"]
    reused = staff.post(f"/api/v1/model-versions/{first.pk}/promote", HTTP_IDEMPOTENCY_KEY="p-1")

    assert [a.status_code for a in answers] == [200, 200] and answers[1]["Idempotent-Replayed"] == "true"
    assert ModelAuditEntry.objects.filter(model_version=second, action="promoted").count() == 1
    assert reused.status_code == 422 and "already used for a different request" in reused.json()["error"]["message"]
    assert champion_model_version() == second


def test_a_retried_training_request_creates_one_run(staff: APIClient) -> None:
    body = {"mode": "lightgbm", "horizon_days": 30, "as_of": "2026-06-01T00:00:00Z"}

    answers = [staff.post("/api/v1/training-runs/", body, format="json", HTTP_IDEMPOTENCY_KEY="t-1") for _ in "ab"]
    invalid = staff.post("/api/v1/training-runs/", {"mode": "magic"}, format="json", HTTP_IDEMPOTENCY_KEY="t-2")

    assert [a.status_code for a in answers] == [202, 202], answers[0].json()
    assert answers[0].json()["id"] == answers[1].json()["id"] and answers[1]["Idempotent-Replayed"] == "true"
    assert TrainingRun.objects.count() == 1
    assert invalid.status_code == 400 and set(invalid.json()["error"]["fields"]) == {"mode"}


def test_a_requested_training_run_says_where_to_poll_it_and_answers_there(staff: APIClient) -> None:
    # "Poll its progress here" meant paging the whole list for the run's id: no Location, no run of its own.
    body = {"mode": "lightgbm", "horizon_days": 30, "as_of": "2026-06-01T00:00:00Z"}
    first, replay = (
        staff.post("/api/v1/training-runs/", body, format="json", HTTP_IDEMPOTENCY_KEY="t-9") for _ in "ab"
    )
    without_key = staff.post("/api/v1/training-runs/", {**body, "horizon_days": 45}, format="json")

    for answer in (first, replay, without_key):
        assert answer.status_code == 202
        assert answer["Location"] == f"http://testserver/api/v1/training-runs/{answer.json()['id']}/"
    polled = staff.get(first["Location"])
    assert polled.status_code == 200 and polled.json() == first.json()
    assert staff.get("/api/v1/training-runs/999999/").status_code == 404


def test_the_schema_documents_the_key_and_its_422_on_every_post_that_takes_it(staff: APIClient) -> None:
    schema = staff.get("/api/v1/schema/", HTTP_ACCEPT="application/json").json()
    posts = {
        path: operation
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if method == "post" and any(p["name"] == "Idempotency-Key" for p in operation.get("parameters", []))
    }

    assert {
        "/api/v1/model-versions/rollback",
        "/api/v1/model-versions/{id}/promote",
        "/api/v1/training-runs/",
        "/api/v1/alert-rules/",
    } <= set(posts)
    assert all("422" in operation["responses"] for operation in posts.values()), [
        path for path, operation in posts.items() if "422" not in operation["responses"]
    ]


@pytest.mark.django_db(transaction=True)  # commits for real: the training runs in the request (eager Celery)
@pytest.mark.parametrize("key", [None, "t-fail"])
def test_a_training_that_fails_in_the_request_answers_with_the_failed_run_not_a_500(staff: APIClient, key) -> None:  # noqa: ANN001
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}

    response = staff.post("/api/v1/training-runs/", {"mode": "lightgbm", "horizon_days": 30}, format="json", **headers)

    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "failed" and "no customer has any qualifying activity" in body["error"]
    assert body["as_of"] is not None, "as_of defaults to now, as for churn_train"


def test_a_training_request_without_mode_or_horizon_takes_the_defaults_of_churn_train(
    staff: APIClient,
    settings,  # noqa: ANN001
) -> None:
    settings.CHURN_DEFAULT_MODE, settings.CHURN_HORIZON_DAYS = "lightgbm", 45
    response = staff.post("/api/v1/training-runs/", {"as_of": "2026-06-01T00:00:00Z"}, format="json")
    assert response.status_code == 202, response.content  # it was a 400: "horizon_days: This field is required"
    run = TrainingRun.objects.get()
    assert (run.mode, run.horizon_days, response.json()["mode"]) == ("lightgbm", 45, "lightgbm")


@pytest.mark.django_db(transaction=True)  # commits for real: the training runs as the request commits
def test_a_training_request_with_a_key_answers_and_replays_the_run_as_it_is_now(staff: APIClient, monkeypatch) -> None:  # noqa: ANN001
    # With an Idempotency-Key the answer was made before the commit that ran the (eager) training: "pending", and a
    # replay of the key said "pending" forever.
    import predictions.tasks as tasks

    def train_now(run_id: int) -> None:  # an eager training that succeeds
        TrainingRun.objects.filter(pk=run_id).update(status=TrainingRun.Status.SUCCEEDED, progress_percent=100)

    monkeypatch.setattr(tasks.train_model_task, "delay", train_now)
    body = {"mode": "lightgbm", "horizon_days": 30}

    first, replay = (
        staff.post("/api/v1/training-runs/", body, format="json", HTTP_IDEMPOTENCY_KEY="t-now") for _ in "ab"
    )

    assert (first.status_code, replay.status_code) == (202, 202)
    assert first.json()["status"] == replay.json()["status"] == "succeeded"
    assert replay["Idempotent-Replayed"] == "true" and TrainingRun.objects.count() == 1
