from __future__ import annotations

import pytest

from churnsite import health


@pytest.mark.django_db
def test_healthz_is_200_and_reports_each_part(client) -> None:  # noqa: ANN001
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["database"] == "ok" and body["status"] == "ok"
    assert body["broker"] in {"ok", "eager"}
    assert body["champion_model"] in {"ok", "missing", "error"}


@pytest.mark.django_db
def test_healthz_is_503_when_the_database_does_not_answer(client, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(health, "database_state", lambda: "error")
    response = client.get("/healthz")
    assert response.status_code == 503 and response.json()["database"] == "error"


@pytest.mark.django_db
def test_healthz_reports_an_unreachable_broker(client, settings) -> None:  # noqa: ANN001
    from churnsite.celery import app as celery_app

    settings.CELERY_TASK_ALWAYS_EAGER = False
    previous = celery_app.conf.broker_url
    celery_app.conf.broker_url = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    try:
        response = client.get("/healthz")
    finally:
        celery_app.conf.broker_url = previous
    assert response.status_code == 200 and response.json()["broker"] == "error"


@pytest.mark.django_db
def test_healthz_shows_when_a_worker_last_consumed_each_queue(client) -> None:  # noqa: ANN001
    from predictions.services import worker_heartbeat_record

    worker_heartbeat_record(hostname="w1@host", queue="gpu")
    seen = client.get("/healthz").json()["workers_last_seen"]
    assert seen["gpu"] is not None and seen["default"] is None and set(seen) == {"default", "gpu", "email"}
