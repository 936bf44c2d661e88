"""Query parameters and options the API cannot use are 400s naming them, never a 500, a 404 or silently ignored."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from customers.models import Customer
from tests.alerts.helpers import customer_make

pytestmark = pytest.mark.django_db


def _error(response) -> dict:  # noqa: ANN001
    return response.json()["error"]


def test_a_long_search_text_is_a_400_naming_q_not_a_server_error(staff: APIClient) -> None:
    # SQLite (the default database) refuses LIKE patterns over 50,000 bytes: "LIKE or GLOB pattern too complex".
    customer_make(1)
    response = staff.get("/api/v1/customers/", {"q": "a" * 60_000})
    assert response.status_code == 400 and "q" in _error(response)["fields"]
    assert staff.get("/api/v1/customers/", {"q": "a" * 200}).status_code == 200


def test_ingest_format_option_in_the_query_string_is_honoured(service: APIClient) -> None:
    upload = SimpleUploadedFile("rows.txt", b"external_id,email\nc1,a@example.com\n", content_type="text/plain")
    response = service.post("/api/v1/ingest/customers?format=csv", {"file": upload}, format="multipart")
    assert response.status_code == 200, response.content
    assert Customer.objects.filter(external_id="c1").exists()


@pytest.mark.parametrize("value", ["abc", "-3", "0", "1.5"])
def test_a_page_size_that_cannot_be_meant_is_a_400_naming_it(staff: APIClient, value: str) -> None:
    customer_make(1)
    response = staff.get("/api/v1/customers/", {"page_size": value})
    assert response.status_code == 400
    assert "page_size" in _error(response)["fields"]


@pytest.mark.parametrize("value", ["abc", "-3", "0", "1.5"])
def test_a_page_number_that_cannot_be_meant_is_a_400_naming_it(staff: APIClient, value: str) -> None:
    # It answered 404 "Invalid page." naming nothing, as if the list itself were not there.
    customer_make(1)
    response = staff.get("/api/v1/customers/", {"page": value})
    assert response.status_code == 400
    assert "page" in _error(response)["fields"]


def test_a_page_past_the_last_is_still_a_404_and_last_is_the_last_page(staff: APIClient) -> None:
    for n in range(3):
        customer_make(n + 1)
    assert staff.get("/api/v1/customers/", {"page": "3", "page_size": "2"}).status_code == 404
    last = staff.get("/api/v1/customers/", {"page": "last", "page_size": "2"})
    assert last.status_code == 200 and len(last.json()["results"]) == 1


def test_a_page_size_above_the_maximum_gives_the_maximum(staff: APIClient, settings) -> None:  # noqa: ANN001
    settings.API_MAX_PAGE_SIZE = 2
    for n in range(3):
        customer_make(n + 1)
    response = staff.get("/api/v1/customers/", {"page_size": "1000"})
    assert response.status_code == 200 and len(response.json()["results"]) == 2


@pytest.mark.parametrize("value", ["-5", "5000"])
def test_a_timeline_limit_outside_0_to_1000_is_a_400_naming_it(staff: APIClient, value: str) -> None:
    customer = customer_make(1)
    response = staff.get(f"/api/v1/customers/{customer.pk}/", {"timeline_limit": value})
    assert response.status_code == 400
    assert "timeline_limit" in _error(response)["fields"]


def test_a_future_training_as_of_is_an_error_naming_as_of(staff: APIClient) -> None:
    response = staff.post(
        "/api/v1/training-runs/",
        {"mode": "lightgbm", "horizon_days": 30, "as_of": "2990-01-01T00:00:00Z"},
        format="json",
    )
    assert response.status_code == 400
    assert "in the future" in _error(response)["fields"]["as_of"][0]


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("map=nonsense", "map"),
        ("map=nofield%3Dcol", "map"),
        ("time_zone=Mars/Olympus", "time_zone"),
        ("delimiter=ab", "delimiter"),
        ("label_col=churn", "label_col"),
    ],
)
def test_a_bad_ingest_option_is_an_error_naming_it(service: APIClient, query: str, parameter: str) -> None:
    kind = "orders" if parameter == "label_col" else "customers"
    response = service.post(f"/api/v1/ingest/{kind}?{query}", "external_id\nc1\n", content_type="text/csv")
    assert response.status_code == 400
    assert parameter in _error(response)["fields"], response.json()


def test_an_unsatisfiable_accept_header_answers_a_documented_status_and_code(staff: APIClient) -> None:
    from drf_spectacular.generators import SchemaGenerator

    response = staff.get("/api/v1/customers/", HTTP_ACCEPT="text/csv")
    operation = SchemaGenerator().get_schema(request=None, public=True)["paths"]["/api/v1/customers/"]["get"]
    assert response.status_code == 406 and "406" in operation["responses"]
    assert _error(response)["code"] == "not_acceptable"
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "`not_acceptable`" in readme
