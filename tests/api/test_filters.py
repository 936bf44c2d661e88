"""List filters answer what was asked (or 400 naming the parameter), and errors outside DRF views keep the envelope."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.files.uploadhandler import FileUploadHandler
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from customers.models import Customer
from tests.api.conftest import api_data

pytestmark = pytest.mark.django_db

INVALID_FILTERS = [
    ("/api/v1/alerts/?rule=abc", "rule"),
    ("/api/v1/alerts/?customer=-1", "customer"),
    ("/api/v1/alerts/?status=bogus", "status"),
    ("/api/v1/alerts/?risk_tier=extreme", "risk_tier"),
    ("/api/v1/scores/?risk_tier=extreme", "risk_tier"),
    ("/api/v1/scores/?customer=x", "customer"),
    ("/api/v1/scores/?min_probability=2", "min_probability"),
    ("/api/v1/scores/?min_probability=nan", "min_probability"),
    ("/api/v1/interventions/?status=bogus", "status"),
    ("/api/v1/interventions/?kind=carrier_pigeon", "kind"),
    ("/api/v1/interventions/?customer=0", "customer"),
    ("/api/v1/model-versions/?status=best", "status"),
    ("/api/v1/training-runs/?status=soon", "status"),
    ("/api/v1/scoring-runs/?status=soon", "status"),
    ("/api/v1/alert-rules/?active=perhaps", "active"),
]


@pytest.mark.parametrize(("url", "parameter"), INVALID_FILTERS)
def test_a_filter_value_that_cannot_be_meant_is_a_400_naming_it(staff: APIClient, url: str, parameter: str) -> None:
    response = staff.get(url)
    error = response.json()["error"]
    assert response.status_code == 400 and error["code"] == "invalid" and list(error["fields"]) == [parameter], error


def test_scores_filter_by_customer_external_id_and_probability(service: APIClient) -> None:
    customers = api_data()["customers"]  # scored 0.2, 0.5 and 0.8

    def probabilities(query: str) -> list[float]:
        response = service.get(f"/api/v1/scores/?{query}")
        assert response.status_code == 200, response.json()
        return [row["probability"] for row in response.json()["results"]]

    assert probabilities(f"customer={customers[1].pk}") == [pytest.approx(0.5)]
    assert probabilities(f"customer_external_id={customers[2].external_id}") == [pytest.approx(0.8)]
    assert probabilities("min_probability=0.5") == [pytest.approx(0.8), pytest.approx(0.5)]
    assert probabilities("customer_external_id=nobody") == []


def test_a_customer_filter_gives_that_customers_score_history_newest_first(service: APIClient) -> None:

    from tests.alerts.helpers import as_of, model_version_make, score_make, scoring_run_make

    data = api_data()
    customer = data["customers"][1]  # scored 0.5 by the first run
    for days, probability in ((10, 0.6), (20, 0.7)):
        score_make(customer, scoring_run_make(model_version_make(), at=as_of(days)), probability)

    for query in (f"customer={customer.pk}", f"customer_external_id={customer.external_id}"):
        rows = service.get(f"/api/v1/scores/?{query}").json()["results"]
        assert [row["probability"] for row in rows] == [pytest.approx(0.7), pytest.approx(0.6), pytest.approx(0.5)]
    assert len(service.get("/api/v1/scores/").json()["results"]) == 3  # without it: each customer's newest


def test_pages_of_tied_scores_neither_overlap_nor_skip(service: APIClient) -> None:
    from tests.alerts.helpers import as_of, customer_make, model_version_make, score_make, scoring_run_make

    run = scoring_run_make(model_version_make(), at=as_of())
    for n in range(30):
        score_make(customer_make(n), run, 0.5 if n % 3 else 0.25)  # many equal probabilities

    seen: list[int] = []
    url = "/api/v1/scores/?page_size=7"
    while url:
        page = service.get(url).json()
        seen += [row["id"] for row in page["results"]]
        url = page["next"]

    assert len(seen) == len(set(seen)) == 30


def test_the_score_list_counts_no_scores_and_pages_by_cursor_both_ways(service: APIClient) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tests.alerts.helpers import as_of, customer_make, model_version_make, score_make, scoring_run_make

    version = model_version_make()
    customers = [customer_make(n) for n in range(12)]
    for days in (0, 5):  # two scores per customer: only the newest is listed
        run = scoring_run_make(version, at=as_of(days))
        for n, customer in enumerate(customers):
            score_make(customer, run, (n % 4) / 4 + days / 100)

    with CaptureQueriesContext(connection) as captured:
        first = service.get("/api/v1/scores/?page_size=5")
    assert first.status_code == 200 and set(first.json()) == {"next", "previous", "results"}, first.json()
    counts = [q["sql"] for q in captured.captured_queries if "COUNT(" in q["sql"].upper()]
    assert not counts, f"the score list counted rows: {counts}"

    pages, url = [], "/api/v1/scores/?page_size=5"
    while url:
        page = service.get(url).json()
        pages.append([row["id"] for row in page["results"]])
        url = page["next"]
    listed = [score_id for page in pages for score_id in page]
    probabilities = [row["probability"] for row in service.get("/api/v1/scores/?page_size=100").json()["results"]]
    assert len(listed) == len(set(listed)) == 12 and [len(page) for page in pages] == [5, 5, 2], pages
    assert probabilities == sorted(probabilities, reverse=True) and min(probabilities) >= 0.05, "newest only"

    last = service.get("/api/v1/scores/?page_size=5").json()
    for _ in range(2):
        last = service.get(last["next"]).json()
    back, url = [], last["previous"]
    while url:
        page = service.get(url).json()
        back.insert(0, [row["id"] for row in page["results"]])
        url = page["previous"]
    assert back == pages[:2], "the previous links walk back over the same pages"

    ascending = service.get("/api/v1/scores/?page_size=5&ordering=probability").json()
    after = service.get(ascending["next"]).json()["results"]
    values = [row["probability"] for row in ascending["results"] + after]
    assert values == sorted(values) and len(values) == 10, "?ordering= is kept across pages"


@pytest.mark.parametrize(
    ("query", "parameter"),
    [("page=2", "page"), ("cursor=bm9wZQ", "cursor"), ("cursor=%%%", "cursor"), ("cursor=e30", "cursor")],
)
def test_the_score_list_refuses_page_numbers_and_cursors_it_did_not_make(
    service: APIClient, query: str, parameter: str
) -> None:
    response = service.get(f"/api/v1/scores/?{query}")
    assert response.status_code == 400 and list(response.json()["error"]["fields"]) == [parameter], response.json()


def test_the_link_back_from_an_empty_score_page_returns_to_the_row_its_cursor_named(service: APIClient) -> None:
    """A page found empty (the rows past its cursor were rescored or deleted since) links back to the rows next to
    its cursor, that row included: the link once started after it, so a client lost a row still listed."""
    from tests.alerts.helpers import as_of, customer_make, model_version_make, score_make, scoring_run_make

    run = scoring_run_make(model_version_make(), at=as_of(0))
    scores = [score_make(customer_make(n), run, 0.9 - n / 10) for n in range(6)]  # listed in this order

    def ids(page: dict) -> list[int]:
        return [row["id"] for row in page["results"]]

    second = service.get(service.get("/api/v1/scores/?page_size=2").json()["next"]).json()
    assert ids(second) == [scores[2].pk, scores[3].pk]
    type(scores[0]).objects.filter(pk__in=[scores[4].pk, scores[5].pk]).delete()
    past_the_end = service.get(second["next"]).json()
    assert ids(past_the_end) == [] and past_the_end["next"] is None
    assert ids(service.get(past_the_end["previous"]).json()) == [scores[2].pk, scores[3].pk]

    type(scores[0]).objects.filter(pk__in=[scores[0].pk, scores[1].pk]).delete()
    before_the_start = service.get(second["previous"]).json()
    assert ids(before_the_start) == [] and before_the_start["previous"] is None
    assert ids(service.get(before_the_start["next"]).json()) == [scores[2].pk, scores[3].pk]


@pytest.mark.parametrize("ordering", ["as_of", "-created_at"])
@pytest.mark.parametrize(
    "value", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "2026-03-10T12:00:00", "2026-03-10"]
)
def test_a_score_list_cursor_with_a_datetime_out_of_range_or_without_offset_is_a_400(
    service: APIClient, ordering: str, value: str
) -> None:
    """Datetimes in the cursors made here carry their offset; one that overflows once in UTC was a 500 on SQLite."""
    import base64
    import json

    api_data()
    cursor = {"o": [ordering, "-id" if ordering.startswith("-") else "id"], "v": [value, 1]}
    token = base64.urlsafe_b64encode(json.dumps(cursor).encode()).decode().rstrip("=")
    response = service.get("/api/v1/scores/", {"ordering": ordering, "cursor": token})
    assert response.status_code == 400 and list(response.json()["error"]["fields"]) == ["cursor"], response.content


def test_a_score_list_cursor_made_for_another_ordering_is_a_400(service: APIClient) -> None:
    api_data()
    next_link = service.get("/api/v1/scores/?page_size=1").json()["next"]
    response = service.get(f"{next_link}&ordering=created_at")
    assert response.status_code == 400 and "another ordering" in response.json()["error"]["message"], response.json()


def test_customers_filter_by_consent_and_opt_out(staff: APIClient) -> None:
    Customer.objects.create(external_id="consenting", marketing_consent=True)
    Customer.objects.create(external_id="opted-out", marketing_consent=True, opted_out_at=timezone.now())
    Customer.objects.create(external_id="silent")

    def ids(query: str) -> set[str]:
        return {row["external_id"] for row in staff.get(f"/api/v1/customers/?{query}").json()["results"]}

    assert ids("opted_out=true") == {"opted-out"}
    assert ids("opted_out=false&marketing_consent=true") == {"consenting"}
    assert ids("marketing_consent=false") == {"silent"}
    assert staff.get("/api/v1/customers/?opted_out=maybe").status_code == 400


def test_interventions_filter_by_customer(staff: APIClient) -> None:
    data = api_data()
    alert = data["alert"]
    assert staff.post(f"/api/v1/alerts/{alert.pk}/send-coupon/").status_code == 201
    other = next(c for c in data["customers"] if c.pk != alert.customer_id)
    assert staff.get(f"/api/v1/interventions/?customer={alert.customer_id}").json()["count"] == 1
    assert staff.get(f"/api/v1/interventions/?customer={other.pk}").json()["count"] == 0


def test_alerts_and_interventions_filter_by_the_customers_external_id_as_scores_do(
    service: APIClient, staff: APIClient
) -> None:
    # A service client knows its own customer ids, not ours (customers/ is staff only), and scores/ takes
    # ?customer_external_id=; on alerts/ the same parameter was ignored and every alert came back.
    data = api_data()  # customers 2 and 3 are alerted (0.5 and 0.8)
    alert = data["alert"]
    alerted = alert.customer.external_id
    unalerted = data["customers"][0].external_id
    rows = service.get(f"/api/v1/alerts/?customer_external_id={alerted}").json()["results"]
    assert [row["id"] for row in rows] == [alert.pk]
    assert service.get(f"/api/v1/alerts/?customer_external_id={unalerted}").json()["count"] == 0
    assert service.get("/api/v1/alerts/?customer_external_id=nobody").json()["count"] == 0
    assert staff.post(f"/api/v1/alerts/{alert.pk}/send-coupon/").status_code == 201
    assert staff.get(f"/api/v1/interventions/?customer_external_id={alerted}").json()["count"] == 1
    assert staff.get(f"/api/v1/interventions/?customer_external_id={unalerted}").json()["count"] == 0


def test_alert_rules_filter_by_active(staff: APIClient) -> None:
    from alerts.models import AlertRule

    AlertRule.objects.create(name="on", threshold=0.5, active=True)
    AlertRule.objects.create(name="off", threshold=0.5, active=False)
    names = {row["name"] for row in staff.get("/api/v1/alert-rules/?active=false").json()["results"]}
    assert names == {"off"} and staff.get("/api/v1/alert-rules/").json()["count"] == 2


def test_model_versions_filter_by_status_and_the_detail_carries_the_model_card(staff: APIClient) -> None:
    from predictions.models import ModelVersion

    card = {"schema": 1, "models": [{"key": "model", "metrics": {"roc_auc": 0.8}}]}
    champion = ModelVersion.objects.create(name="champ", model_type="lightgbm", status="champion", model_card=card)
    ModelVersion.objects.create(name="old", model_type="lightgbm", status="retired")
    listed = staff.get("/api/v1/model-versions/?status=champion").json()
    assert [row["name"] for row in listed["results"]] == ["champ"] and "model_card" not in listed["results"][0]
    assert staff.get(f"/api/v1/model-versions/{champion.pk}/").json()["model_card"] == card


def test_a_service_client_requests_a_score_by_the_customer_id_it_knows(service: APIClient) -> None:
    Customer.objects.create(external_id="crm/42 ü")
    found = service.post("/api/v1/customers/by-external-id/crm%2F42%20%C3%BC/score")
    assert found.status_code == 503 and "no champion" in found.json()["error"]["message"], "the customer was found"
    missing = service.post("/api/v1/customers/by-external-id/nobody/score")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_an_unknown_api_path_answers_in_the_envelope_and_site_pages_stay_html(staff: APIClient) -> None:
    response = staff.get("/api/v1/no-such-thing/")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert "/api/v1/no-such-thing/" in response.json()["error"]["message"]
    page = Client().get("/no-such-page/")
    assert page.status_code == 404 and page["Content-Type"].startswith("text/html")


def test_a_crash_in_an_api_view_answers_500_in_the_envelope_without_a_traceback(
    staff_user,  # noqa: ANN001
    monkeypatch,  # noqa: ANN001
) -> None:
    import predictions.views

    def crash() -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(predictions.views, "latest_scores_for_pages", crash)
    client = Client(raise_request_exception=False)
    client.force_login(staff_user)
    response = client.get("/api/v1/scores/")
    body = response.json()
    assert response.status_code == 500 and body["error"]["code"] == "server_error"
    assert "secret internals" not in response.content.decode()


class RecordingUploadHandler(FileUploadHandler):
    """Counts the bytes Django reads from uploads (a refused upload must be refused before any is read)."""

    received: list[int] = []

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        self.received.append(len(raw_data))
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None


def test_an_upload_declared_larger_than_the_ingest_limit_is_refused_before_it_is_read(
    staff: APIClient,
    settings,  # noqa: ANN001
) -> None:
    settings.CHURN_INGEST_MAX_BYTES = 1000
    settings.FILE_UPLOAD_HANDLERS = [f"{__name__}.RecordingUploadHandler", *settings.FILE_UPLOAD_HANDLERS]
    RecordingUploadHandler.received.clear()
    upload = SimpleUploadedFile("orders.csv", b"customer_id,date,amount\n" + b"c1,2026-01-01,1\n" * 10_000)
    response = staff.post("/api/v1/ingest/orders", {"file": upload}, format="multipart")
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
    assert RecordingUploadHandler.received == [], "the upload was read before it was refused"
