"""Every ordering the score list allows pages by cursor over each customer's newest score: no row twice or left out,
in the order asked with ties broken by id, the previous links walking back over the same pages; the orderings an
index serves read a page through it and sort nothing, also from a cursor in the middle of a long run of ties."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from predictions.models import ChurnScore
from predictions.selectors import LATEST_SCORE_ORDERINGS_WALKED
from tests.alerts.helpers import as_of, customer_make, model_version_make, score_make, scoring_run_make
from tests.plans import index_plan

pytestmark = pytest.mark.django_db

ORDERINGS = [
    *sorted(LATEST_SCORE_ORDERINGS_WALKED),
    "as_of",
    "created_at",
    "as_of,-probability",
    "-as_of,customer",
]
KEYS = {"probability": "probability", "as_of": "as_of", "created_at": "created_at", "customer": "customer_id"}


def _store() -> list[ChurnScore]:
    """Each customer's newest score: long runs of ties (one as_of, three probabilities), customers no longer scored
    (their newest score older than the others'), and a score at the same as_of by a second model (newer by
    creation)."""
    old, new = model_version_make(), model_version_make()
    runs = [scoring_run_make(old, at=as_of(days)) for days in (0, 5, 10)]
    customers = [customer_make(n) for n in range(14)]
    for days, run in zip((0, 5, 10), runs, strict=True):
        for n, customer in enumerate(customers):
            if days == 10 and n in (3, 7):
                continue  # no longer scored: their newest score is of day 5
            score_make(customer, run, 0.2 + (n % 3) / 10 + days / 1000)
    rescored = scoring_run_make(new, at=as_of(10))
    score_make(customers[0], rescored, 0.9)
    newest = []
    for customer in customers:
        newest.append(ChurnScore.objects.filter(customer=customer).order_by("-as_of", "-created_at", "-id").first())
    return newest


def _expected(newest: list[ChurnScore], ordering: str) -> list[int]:
    terms = ordering.split(",")
    rows = sorted(newest, key=lambda score: score.pk, reverse=terms[0].startswith("-"))
    for term in reversed(terms):
        rows.sort(key=lambda score: getattr(score, KEYS[term.lstrip("-")]), reverse=term.startswith("-"))
    return [score.pk for score in rows]


@pytest.mark.parametrize("ordering", ORDERINGS)
def test_every_ordering_pages_over_each_customers_newest_score_both_ways(service: APIClient, ordering: str) -> None:
    newest = _store()
    pages, url = [], f"/api/v1/scores/?page_size=4&ordering={ordering}"
    while url:
        response = service.get(url)
        assert response.status_code == 200, response.json()
        pages.append([row["id"] for row in response.json()["results"]])
        url = response.json()["next"]
    assert [score_id for page in pages for score_id in page] == _expected(newest, ordering), pages

    back, url = [], service.get(url := f"/api/v1/scores/?page_size=4&ordering={ordering}").json()["next"]
    last = None
    while url:
        last = service.get(url).json()
        url = last["next"]
    url = last["previous"]
    while url:
        page = service.get(url).json()
        back.insert(0, [row["id"] for row in page["results"]])
        url = page["previous"]
    assert back == pages[:-1], "the previous links walk back over the same pages"


def _page_query(service: APIClient, url: str) -> tuple[str, dict]:
    with CaptureQueriesContext(connection) as captured:
        response = service.get(url)
    assert response.status_code == 200, response.json()
    pages = [
        q["sql"] for q in captured.captured_queries if "predictions_churnscore" in q["sql"] and "LIMIT" in q["sql"]
    ]
    assert len(pages) == 1, pages
    return pages[0], response.json()


INDEXES = {"probability": "score_probability", "as_of": "score_as_of_id", "created_at": "score_created_at_id"}


@pytest.mark.parametrize("ordering", sorted(LATEST_SCORE_ORDERINGS_WALKED))
def test_a_page_in_an_indexed_ordering_starts_at_its_cursor_in_the_index_and_sorts_nothing(
    service: APIClient, ordering: str
) -> None:
    """?ordering=as_of (or created_at, customer) sorted every customer's newest score for each page, and a page
    from a cursor inside the 50,000 scores of one as_of passed over every one before it: now each reads the index
    from its cursor, the row comparison (as_of, id) < (x, y) the start of the index range."""
    _store()
    first = service.get(f"/api/v1/scores/?page_size=3&ordering={ordering}").json()
    sql, _ = _page_query(service, first["next"])
    plan = index_plan(sql)
    field = ordering.lstrip("-")
    if connection.vendor == "postgresql":
        index = INDEXES.get(field, r"\w*customer\w*")
        assert re.search(rf"Index (Only )?Scan( Backward)? using {index} on predictions_churnscore", plan), plan
        # Not a sort of the page's rows: by customer, the foreign key's index gives the customers in order and an
        # incremental sort puts each customer's rows in id order (one row each, the newest).
        assert not re.search(r"^\s*(->\s*)?Sort\s+\(", plan, re.MULTILINE), plan
        # The cursor bounds the index scan (by customer, maybe its first column only), not a filter after it.
        bound = (
            r"(ROW\(customer_id, id\) [<>]|customer_id [<>]=)" if field == "customer" else rf"ROW\({field}, id\) [<>]"
        )
        assert re.search(rf"Index Cond: \({bound}", plan), plan
    else:
        assert "USE TEMP B-TREE FOR ORDER BY" not in plan and not re.search(
            r"^SCAN predictions_churnscore$", plan, re.MULTILINE
        ), plan
