"""POST /api/v1/ingest/<kind>: JSON array, JSON lines and CSV bodies, file uploads, limits and errors."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from customers.models import Customer, ImportRun, Message, Order
from tests.staff import grant_app_permissions

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff() -> APIClient:
    user = grant_app_permissions(get_user_model().objects.create_user(username="ops", password="x", is_staff=True))
    client = APIClient()
    client.force_authenticate(user)
    return client


ORDERS = [
    {"customer_id": "c1", "date": "2024-01-05T10:00:00Z", "amount": "10.50"},
    {"customer_id": "c1", "date": "2024-01-05T10:00:00Z", "amount": "10.50"},
    {"customer_id": "c2", "date": "20240106", "amount": 0},
]


def test_json_array_body_imports_and_a_repeat_adds_nothing(staff: APIClient) -> None:
    response = staff.post("/api/v1/ingest/orders", json.dumps(ORDERS), content_type="application/json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["rows_imported"], body["customers_created"], body["errors"]) == (3, 2, [])
    again = staff.post("/api/v1/ingest/orders", json.dumps(ORDERS), content_type="application/json").json()
    assert (again["rows_imported"], again["rows_unchanged"], Order.objects.count()) == (0, 3, 3)
    assert ImportRun.objects.filter(started_by="ops", source="api").count() == 2


def test_jsonl_body_reports_bad_rows_with_row_and_field(staff: APIClient) -> None:
    lines = [
        {"customer_id": "c1", "sent_at": "2024-01-01T10:00:00Z", "text": "<script>alert(1)</script>"},
        {"customer_id": "c1", "sent_at": "2999-01-01", "text": "from the future"},
        {"customer_id": "c1", "sent_at": "2024-01-01", "text": "nul \u0000 byte"},
    ]
    body = "\n".join(json.dumps(line) for line in lines)
    response = staff.post("/api/v1/ingest/messages", body, content_type="application/x-ndjson")
    assert response.status_code == 200
    errors = [(error["row"], error["field"]) for error in response.json()["errors"]]
    assert errors == [(2, "sent_at"), (3, "text")]
    assert Message.objects.get().text == "<script>alert(1)</script>"
    assert response["Content-Type"] == "application/json"


def test_csv_body_with_options_in_the_query_string(staff: APIClient) -> None:
    csv_body = "CLIENTNUM,Attrition_Flag,Leak\n1,Attrited Customer,0.9\n2,Existing Customer,0.1\n"
    response = staff.post(
        "/api/v1/ingest/customers?map=external_id=CLIENTNUM&label_col=Attrition_Flag"
        "&positive=Attrited%20Customer&drop_col=Leak",
        csv_body,
        content_type="text/csv",
    )
    assert response.status_code == 200, response.content
    assert dict(Customer.objects.values_list("external_id", "churned")) == {"1": True, "2": False}
    assert Customer.objects.get(external_id="1").attributes == {}


def test_file_upload_detects_the_format_from_the_name(staff: APIClient) -> None:
    upload = SimpleUploadedFile("log.csv", b"customer_id,date,amount\nc1,2024-01-01,5\n", content_type="text/csv")
    response = staff.post("/api/v1/ingest/orders", {"file": upload, "dry_run": "true"}, format="multipart")
    assert response.status_code == 200, response.content
    assert (response.json()["rows_imported"], response.json()["dry_run"], Order.objects.count()) == (1, True, 0)


def test_json_top_level_object_is_a_400_with_a_clear_message(staff: APIClient) -> None:
    response = staff.post("/api/v1/ingest/orders", json.dumps(ORDERS[0]), content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "invalid",
        "message": "the JSON top level must be an array of objects, found an object",
        "fields": {},
    }


def test_every_row_rejected_is_a_400_that_lists_the_rows(staff: APIClient) -> None:
    rows = [{"customer_id": "c1", "date": "2024-01-01", "amount": "NaN"}]
    response = staff.post("/api/v1/ingest/orders", json.dumps(rows), content_type="application/json")
    assert response.status_code == 400
    assert response.json()["errors"] == [
        {"row": 1, "field": "amount", "reason": "'NaN' is not a number (column 'amount')"}
    ]


def test_body_over_the_limit_is_refused_without_importing(staff: APIClient, settings) -> None:
    settings.CHURN_INGEST_MAX_BYTES = 100
    response = staff.post("/api/v1/ingest/orders", json.dumps(ORDERS * 5), content_type="application/json")
    assert response.status_code == 413 and "CHURN_INGEST_MAX_BYTES" in response.json()["error"]["message"]
    assert not ImportRun.objects.exists()


def test_unknown_kind_and_content_type_are_refused(staff: APIClient) -> None:
    assert staff.post("/api/v1/ingest/refunds", "[]", content_type="application/json").status_code == 404
    assert staff.post("/api/v1/ingest/orders", "<x/>", content_type="application/xml").status_code == 415


def test_ingest_needs_a_staff_user() -> None:
    client = APIClient()
    assert client.post("/api/v1/ingest/orders", "[]", content_type="application/json").status_code in (401, 403)
    user = get_user_model().objects.create_user(username="customer", password="x")
    client.force_authenticate(user)
    assert client.post("/api/v1/ingest/orders", "[]", content_type="application/json").status_code == 403


def test_a_rejected_field_whose_name_holds_nul_or_a_broken_surrogate_is_reported_and_stored(staff: APIClient) -> None:
    # The JSON escapes arrive as a real NUL and an unpaired surrogate in attribute names (PostgreSQL's jsonb
    # refuses both, so storing the row errors of the import run used to be a 500).
    body = '[{"external_id": "c1", "#\\u0000x": 1}, {"external_id": "c2", "y\\udab7": 2}, {"external_id": "c3"}]'

    response = staff.post("/api/v1/ingest/customers", body, content_type="application/json")

    assert response.status_code == 200, response.content
    fields = [error["field"] for error in response.json()["errors"]]
    assert fields == ["attributes.#\\x00x", "attributes.y\\udab7"], fields
    run = ImportRun.objects.get()
    assert [error["field"] for error in run.errors] == fields and Customer.objects.count() == 1


def test_an_upload_takes_its_options_from_the_query_string_and_from_form_fields(staff: APIClient) -> None:
    rows = b"customerID,plan,Churn\nt1,monthly,Yes\nt2,yearly,No\n"

    query = staff.post(
        "/api/v1/ingest/customers?label_col=Churn&positive=Yes&map=external_id=customerID",
        {"file": SimpleUploadedFile("t.csv", rows, content_type="text/csv")},
        format="multipart",
    )
    form = staff.post(
        "/api/v1/ingest/customers?positive=No",  # the form's value wins
        {"file": SimpleUploadedFile("t.csv", rows, content_type="text/csv"), "label_col": "Churn", "positive": "Yes",
         "map": "external_id=customerID"},
        format="multipart",
    )  # fmt: skip

    assert query.status_code == form.status_code == 200, (query.content, form.content)
    assert dict(Customer.objects.values_list("external_id", "churned")) == {"t1": True, "t2": False}
    assert all("Churn" not in customer.attributes for customer in Customer.objects.all())


@pytest.mark.parametrize(
    ("query", "field", "words"),
    [
        ("positive=yes", "positive", "give label_col too"),  # the labels were imported as an attribute, 200
        ("label_col=Nope", "label_col", "no such column"),
        ("map=email=Mail", "map", "no column 'Mail'"),
    ],
)
def test_options_that_do_not_fit_the_file_are_refused_by_name(
    staff: APIClient, query: str, field: str, words: str
) -> None:
    response = staff.post(f"/api/v1/ingest/customers?{query}", "external_id,Churn\nz1,yes\n", content_type="text/csv")
    assert response.status_code == 400, response.content
    assert words in " ".join(response.json()["error"]["fields"][field])
    assert not Customer.objects.exists() and not ImportRun.objects.filter(rows_imported__gt=0).exists()


@pytest.mark.parametrize(
    ("url", "body", "content_type", "field"),
    [
        # The body's type decides its format; a format= naming another one was silently ignored.
        ("/api/v1/ingest/orders?format=xlsx", "customer_id,date,amount\nc1,2024-01-01,5\n", "text/csv", "format"),
        # Options of another format were ignored: the CSV was read whatever sheet was named, the JSON whatever delimiter.
        ("/api/v1/ingest/orders?sheet=Orders", "customer_id,date,amount\nc1,2024-01-01,5\n", "text/csv", "sheet"),
        ("/api/v1/ingest/orders?delimiter=;", json.dumps(ORDERS), "application/json", "delimiter"),
    ],
)
def test_an_option_that_the_body_format_cannot_use_is_a_400_naming_it(
    staff: APIClient, url: str, body: str, content_type: str, field: str
) -> None:
    response = staff.post(url, body, content_type=content_type)
    assert response.status_code == 400, response.content
    assert field in response.json()["error"]["fields"], response.json()
    assert Order.objects.count() == 0
    assert set(ImportRun.objects.values_list("status", flat=True)) <= {ImportRun.Status.FAILED}


def test_a_workbook_uploaded_as_csv_is_named_as_a_workbook(staff: APIClient) -> None:
    import io

    from openpyxl import Workbook

    workbook = Workbook()
    workbook.active.append(["customer_id", "date", "amount"])
    workbook.active.append(["c1", "2024-01-01", 5])
    data = io.BytesIO()
    workbook.save(data)
    upload = SimpleUploadedFile("orders.csv", data.getvalue(), content_type="text/csv")
    response = staff.post("/api/v1/ingest/orders", {"file": upload}, format="multipart")
    assert response.status_code == 400, response.content
    assert "xlsx" in str(response.json()["error"]["fields"]["format"]), response.json()
    assert Order.objects.count() == 0


def test_a_customers_attributes_object_is_their_attributes_not_one_attribute_named_attributes(staff: APIClient) -> None:
    # The customer API answers "attributes": {...}; sent back in that shape, the object was stored as one attribute
    # named "attributes" (a feature attr_attributes, and rule filters on "plan" matched nobody).
    rows = [
        {"external_id": "c1", "attributes": {"plan": "gold", "MonthlyCharges": "42.50"}, "plan": "platinum"},
        {"external_id": "c2", "attributes": {"bad": "nul \u0000"}},
    ]
    response = staff.post("/api/v1/ingest/customers", json.dumps(rows), content_type="application/json")
    assert response.status_code == 200, response.content
    assert Customer.objects.get(external_id="c1").attributes == {"plan": "platinum", "MonthlyCharges": 42.5}
    assert [(error["row"], error["field"]) for error in response.json()["errors"]] == [(2, "attributes.bad")]
    # A CSV with the export's attributes column (JSON text) reads the same way, so an export imports back.
    csv_body = 'external_id,attributes\nc3,"{""plan type"": ""gold"", ""seats"": 3}"\nc4,not json\n'
    response = staff.post("/api/v1/ingest/customers", csv_body, content_type="text/csv")
    assert response.status_code == 200, response.content
    assert Customer.objects.get(external_id="c3").attributes == {"plan type": "gold", "seats": 3}
    assert Customer.objects.get(external_id="c4").attributes == {"attributes": "not json"}
