"""The daily pruning of churn scores: scores older than CHURN_SCORES_KEEP_DAYS go, except what a reader still needs
(each customer's two newest, scores alerts refer to, the champion's newest scoring run), a batch at a time."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from alerts.models import ActionKind, Alert, AlertRule
from churnsite.services import api_client_create
from customers.models import Customer
from predictions.models import ChurnScore, ModelVersion, ScoringRun
from predictions.selectors import customers_annotate_latest_score, latest_scores
from predictions.services import churn_scores_prune
from predictions.tasks import prune_scores_task
from tests.alerts.helpers import customer_make, model_version_make
from tests.plans import index_plan

pytestmark = pytest.mark.django_db


def _score(customer: Customer, version: ModelVersion, *, days_ago: int, stored_days_ago: int | None = None) -> int:
    """A score about ``days_ago`` days ago, stored then (or ``stored_days_ago``), from a finished run of ``version``."""
    at = timezone.now() - timedelta(days=days_ago)
    run, _ = ScoringRun.objects.get_or_create(model_version=version, as_of=at, defaults={"status": "succeeded"})
    score = ChurnScore.objects.create(
        customer=customer, model_version=version, scoring_run=run, as_of=at, probability=0.5 + days_ago / 1000,
        risk_tier="medium",
    )  # fmt: skip
    stored = timezone.now() - timedelta(days=days_ago if stored_days_ago is None else stored_days_ago)
    ChurnScore.objects.filter(pk=score.pk).update(created_at=stored)
    return score.pk


def _store() -> dict[str, set[int]]:
    """Scores that must go and scores that must stay with 30 days kept, by why."""
    # ``recent`` scored until it was rolled back: ``champion`` has the role again and has not scored since.
    previous, recent, champion = model_version_make(), model_version_make(), model_version_make()
    ModelVersion.objects.filter(pk__in=[previous.pk, recent.pk]).update(status="retired")
    ModelVersion.objects.filter(pk=champion.pk).update(status="champion")
    rescored, stopped, alerted, rolled_back, backfilled = (customer_make(n) for n in range(5))
    go, stay = set(), set()
    # Rescored daily: the old ones go, the recent ones stay.
    go |= {_score(rescored, previous, days_ago=d) for d in (100, 60, 31)}
    stay |= {_score(rescored, recent, days_ago=d) for d in (29, 10, 1)}
    # No longer scored (churned): the two newest stay however old, for the lists and the trend.
    go |= {_score(stopped, previous, days_ago=d) for d in (100, 99)}
    stay |= {_score(stopped, previous, days_ago=d) for d in (98, 97)}
    # An alert's score stays while the alert does.
    alerted_score = _score(alerted, previous, days_ago=100)
    stay |= {alerted_score, _score(alerted, recent, days_ago=2), _score(alerted, recent, days_ago=1)}
    go.add(_score(alerted, previous, days_ago=101))
    rule = AlertRule.objects.create(name="retention", action=ActionKind.NONE, holdout_fraction=0)
    Alert.objects.create(
        customer=alerted, rule=rule, score_id=alerted_score, period_start=timezone.now().date(),
        as_of=timezone.now() - timedelta(days=100), probability=0.6, risk_tier="high",
    )  # fmt: skip
    # The champion's newest run stays: the drift check reads it. Not the champion's older runs.
    stay.add(_score(rolled_back, champion, days_ago=60))
    stay |= {_score(rolled_back, recent, days_ago=d) for d in (45, 40)}
    go |= {_score(rolled_back, champion, days_ago=70), _score(rolled_back, previous, days_ago=120)}
    # A backfill: about long ago, stored recently.
    stay |= {_score(backfilled, previous, days_ago=d, stored_days_ago=1) for d in (200, 190, 180)}
    return {"go": go, "stay": stay}


def test_old_scores_go_except_what_the_lists_alerts_and_drift_check_read(settings) -> None:  # noqa: ANN001
    settings.CHURN_SCORES_KEEP_DAYS = 30
    expected = _store()

    assert prune_scores_task.delay().get() == len(expected["go"])
    assert set(ChurnScore.objects.values_list("pk", flat=True)) == expected["stay"]
    assert Alert.objects.get().score_id in expected["stay"]
    assert prune_scores_task.delay().get() == 0  # again: nothing more


def test_pruning_in_small_batches_deletes_the_same_scores() -> None:
    expected = _store()

    assert churn_scores_prune(older_than=timedelta(days=30), batch_size=2) == len(expected["go"])
    assert set(ChurnScore.objects.values_list("pk", flat=True)) == expected["stay"]


def test_pruning_changes_no_list_of_newest_scores_or_their_trend(settings) -> None:  # noqa: ANN001
    """What the score API, the dashboard and the customer list show (newest score and the one before it) is the
    same before and after the pruning."""
    settings.CHURN_SCORES_KEEP_DAYS = 30
    _store()
    service = APIClient()
    service.credentials(HTTP_AUTHORIZATION=f"Token {api_client_create(name='crm-sync').token}")

    def shown() -> tuple:
        scores = [row["id"] for row in service.get("/api/v1/scores/?page_size=100").json()["results"]]
        newest = sorted(latest_scores().values_list("pk", flat=True))
        customers = customers_annotate_latest_score(customers=Customer.objects.order_by("pk"))
        trend = list(customers.values_list("pk", "latest_score_id", "latest_probability", "previous_probability"))
        return scores, newest, trend

    before = shown()
    assert prune_scores_task.delay().get() > 0
    assert shown() == before


def test_a_pruning_out_of_time_stops_between_batches_and_the_next_one_goes_on() -> None:
    expected = _store()

    first = churn_scores_prune(older_than=timedelta(days=30), batch_size=2, max_seconds=0)
    assert 0 < first <= 2, first
    assert churn_scores_prune(older_than=timedelta(days=30), batch_size=2) == len(expected["go"]) - first
    assert set(ChurnScore.objects.values_list("pk", flat=True)) == expected["stay"]


def test_each_batch_starts_at_its_cursor_in_the_created_at_index_and_sorts_nothing() -> None:
    """The candidates after the cursor were (created_at > x OR created_at = x AND id > y): for each batch SQLite
    read every candidate after the cursor through the two halves of the OR and sorted them, and PostgreSQL did the
    same with a bitmap or walked the index from its first row, so a backlog of a year of scores cost its size times
    the number of batches."""
    _store()
    with CaptureQueriesContext(connection) as captured:
        churn_scores_prune(older_than=timedelta(days=30), batch_size=2)
    batches = [
        q["sql"]
        for q in captured.captured_queries
        if q["sql"].startswith(
            'SELECT "predictions_churnscore"."created_at" AS "created_at", "predictions_churnscore"."id"'
        )
    ]
    assert len(batches) > 2, [q["sql"] for q in captured.captured_queries]
    plan = index_plan(batches[1])  # the second batch: after the first one's cursor
    if connection.vendor == "postgresql":
        assert re.search(r"Index (Only )?Scan using score_created_at_id", plan), plan
        assert re.search(r"Index Cond: \(.*created_at >= ", plan), plan
        assert not re.search(r"^\s*(->\s*)?Sort\s+\(", plan, re.MULTILINE), plan
    else:
        assert "TEMP B-TREE" not in plan and "MULTI-INDEX OR" not in plan, plan
        assert re.search(r"USING (COVERING )?INDEX score_created_at_id \(created_at>\? AND created_at<\?\)", plan), plan
