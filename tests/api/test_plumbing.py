"""Pagination caps, ordering, throttling, the body size limit and the error envelope."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle

from customers.models import Customer

pytestmark = pytest.mark.django_db


@pytest.fixture
def five_customers() -> list[Customer]:
    return [Customer.objects.create(external_id=f"c{n}", name=name) for n, name in enumerate("EDCBA")]


def test_page_size_is_honoured_up_to_the_cap(staff: APIClient, five_customers: list[Customer], settings) -> None:  # noqa: ANN001
    settings.API_MAX_PAGE_SIZE = 3
    assert len(staff.get("/api/v1/customers/?page_size=2").json()["results"]) == 2
    capped = staff.get("/api/v1/customers/?page_size=1000").json()
    assert (len(capped["results"]), capped["count"]) == (3, 5)
    settings.API_MAX_PAGE_SIZE = 2  # the default page (50) is capped too
    default = staff.get("/api/v1/customers/").json()
    assert (len(default["results"]), default["count"]) == (2, 5)


def test_ordering_by_a_listed_field_and_unknown_fields_are_ignored(staff: APIClient, five_customers) -> None:  # noqa: ANN001
    names = [row["name"] for row in staff.get("/api/v1/customers/?ordering=name").json()["results"]]
    assert names == ["A", "B", "C", "D", "E"]
    descending = [row["name"] for row in staff.get("/api/v1/customers/?ordering=-name").json()["results"]]
    assert descending == ["E", "D", "C", "B", "A"]
    # email is not an ordering field of the list: the default order (oldest first) stays.
    default = [row["name"] for row in staff.get("/api/v1/customers/?ordering=email").json()["results"]]
    assert default == ["E", "D", "C", "B", "A"]


def test_rows_without_a_value_come_last_in_either_direction_on_every_database(staff: APIClient) -> None:
    # SQLite put them first going up and PostgreSQL first going down: the same request, opposite ends.
    for n, day in enumerate([None, 3, None, 1, 2]):
        signed_up = None if day is None else datetime(2024, 1, day, tzinfo=UTC)
        Customer.objects.create(external_id=f"c{n}", signed_up_at=signed_up)
    for ordering, expected in (("signed_up_at", ["c3", "c4", "c1"]), ("-signed_up_at", ["c1", "c4", "c3"])):
        rows = staff.get(f"/api/v1/customers/?ordering={ordering}").json()["results"]
        ids = [row["external_id"] for row in rows]
        assert ids[:3] == expected and set(ids[3:]) == {"c0", "c2"}, (ordering, ids)


def test_every_throttled_answer_says_the_limit_what_is_left_and_when_it_resets(service: APIClient, monkeypatch) -> None:  # noqa: ANN001
    # Only a 429 said anything (Retry-After): a client could not slow down before it hit the limit.
    monkeypatch.setattr(
        SimpleRateThrottle, "THROTTLE_RATES", {"user": "5/minute", "anon": "5/minute", "ingest": "2/minute"}
    )
    first, second = service.get("/api/v1/scores/"), service.get("/api/v1/scores/")
    assert (first["RateLimit-Limit"], first["RateLimit-Remaining"], second["RateLimit-Remaining"]) == ("5", "4", "3")
    assert 0 < int(first["RateLimit-Reset"]) <= 60
    # Ingestion has a tighter limit of its own: the headers give the one nearest to refusing.
    ingest = [service.post("/api/v1/ingest/orders", "[]", content_type="application/json") for _ in range(3)]
    assert [(r.status_code, r["RateLimit-Limit"], r["RateLimit-Remaining"]) for r in ingest] == [
        (200, "2", "1"),
        (200, "2", "0"),
        (429, "2", "0"),
    ]
    assert int(ingest[2]["Retry-After"]) > 0 and int(ingest[2]["RateLimit-Reset"]) > 0


@pytest.mark.parametrize("debug", [False, True])
def test_a_write_to_an_api_path_without_its_trailing_slash_is_sent_on_with_its_method(
    staff: APIClient,
    settings,
    debug: bool,  # noqa: ANN001, FBT001
) -> None:
    # Django answered 301 (DEBUG off), which clients follow with a GET: POST /api/v1/alert-rules then listed the
    # rules with a 200 and created nothing; with DEBUG on it was a 500 (RuntimeError).
    from alerts.models import AlertRule

    settings.DEBUG = debug
    rule = {"name": "slashless", "threshold": 0.5, "action": "none"}
    response = staff.post("/api/v1/alert-rules?x=1", rule, format="json")
    assert response.status_code == 308 and response["Location"] == "/api/v1/alert-rules/?x=1"
    assert not AlertRule.objects.filter(name="slashless").exists()
    assert staff.post(response["Location"], rule, format="json").status_code == 201
    assert staff.get("/api/v1/alert-rules").status_code == 301, "a read still gets the usual redirect"


def test_throttled_client_gets_429_with_retry_after(service: APIClient, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"user": "2/minute", "anon": "2/minute"})
    statuses = [service.get("/api/v1/scores/").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    response = service.get("/api/v1/scores/")
    assert response.json()["error"]["code"] == "throttled" and int(response["Retry-After"]) > 0


def test_real_time_scoring_has_its_own_tighter_rate(service: APIClient, monkeypatch) -> None:  # noqa: ANN001
    rates = {"user": "100/minute", "anon": "2/minute", "realtime-score": "1/minute", "ingest": "100/minute"}
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", rates)
    customer = Customer.objects.create(external_id="c1")
    first = service.post(f"/api/v1/customers/{customer.pk}/score")
    assert first.status_code == 503, "no champion model in this test"
    assert service.post(f"/api/v1/customers/{customer.pk}/score").status_code == 429
    assert service.get("/api/v1/scores/").status_code == 200, "other operations are not throttled by that scope"


def test_json_body_above_the_limit_is_413_and_nothing_is_written(staff: APIClient, settings) -> None:  # noqa: ANN001
    from alerts.models import AlertRule

    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 200
    body = {"name": "big", "threshold": 0.5, "description": "x" * 500}
    response = staff.post("/api/v1/alert-rules/", body, format="json")
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
    assert not AlertRule.objects.exists()


def test_json_body_above_the_limit_is_413_with_an_idempotency_key_too(staff: APIClient, settings) -> None:  # noqa: ANN001
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 200
    body = json.dumps({"name": "big", "threshold": 0.5, "description": "x" * 500})
    response = staff.post("/api/v1/alert-rules/", body, content_type="application/json", HTTP_IDEMPOTENCY_KEY="k1")
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"


def test_validation_errors_name_the_field(staff: APIClient) -> None:
    response = staff.post("/api/v1/alert-rules/", {"name": "r", "threshold": 7}, format="json")
    error = response.json()["error"]
    assert response.status_code == 400 and error["code"] == "invalid"
    assert list(error["fields"]) == ["threshold"] and error["message"].startswith("threshold: ")
    response = staff.post("/api/v1/alert-rules/", {"name": "r", "segment_thresholds": {"vip": "high"}}, format="json")
    assert response.status_code == 400 and list(response.json()["error"]["fields"]) == ["segment_thresholds"]


def test_not_found_conflict_and_malformed_json_share_the_envelope(staff: APIClient) -> None:
    missing = staff.get("/api/v1/customers/999999/")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    conflict = staff.post("/api/v1/model-versions/rollback")
    assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "conflict"
    malformed = staff.post("/api/v1/alert-rules/", "{not json", content_type="application/json")
    assert malformed.status_code == 400 and malformed.json()["error"]["code"] == "parse_error"
    assert set(malformed.json()["error"]) == {"code", "message", "fields"}


def test_only_json_bodies_are_parsed_outside_ingestion(staff: APIClient) -> None:
    response = staff.post(
        "/api/v1/alert-rules/", "name=r&threshold=0.5", content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 415 and response.json()["error"]["code"] == "unsupported_media_type"


def test_ingestion_keeps_its_report_beside_the_envelope_when_every_row_is_rejected(service: APIClient) -> None:
    rows = [{"customer_id": "c1", "date": "not a date", "amount": "1"}]
    response = service.post("/api/v1/ingest/orders?map=external_id=nope", rows, format="json")
    body = response.json()
    assert response.status_code == 400 and body["error"]["code"] == "rows_rejected"
    assert body["rows_rejected"] == 1 and body["errors"][0]["row"]
