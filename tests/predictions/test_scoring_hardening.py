"""Scoring findings of an audit, each pinned: a rerun at the same as_of alerts on every customer's score, a
customer deleted during a run does not sink its chunk, and an as_of in the future is refused."""

from __future__ import annotations

import io
from datetime import timedelta
from unittest import mock

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from alerts.models import ActionKind, Alert, AlertRule, TriggerKind
from alerts.services import alerts_apply_rules
from customers.models import Customer
from predictions.models import ChurnScore, ScoringRun, TrainingRun
from predictions.selectors import customers_to_score
from predictions.services import scoring
from predictions.services.scoring import scoring_run_score_chunk, scoring_run_start
from predictions.services.training import training_run_request
from tests.predictions.conftest import STORE_END, train

pytestmark = pytest.mark.django_db(transaction=True)
END = STORE_END


def test_a_rerun_at_the_same_as_of_after_a_failed_run_alerts_on_every_customer(store: None, settings) -> None:  # noqa: ANN001
    settings.CHURN_AFTER_SCORING_TASKS = []  # the rules are applied below, by hand
    train()
    eligible = list(customers_to_score(as_of=END).values_list("id", flat=True))
    with mock.patch.object(scoring, "_enqueue_chunks"):
        first = scoring_run_start(trigger="first", as_of=END)
    scoring_run_score_chunk(scoring_run_id=first.pk, customer_ids=eligible[: len(eligible) // 2])
    scoring.scoring_run_mark_failed(scoring_run_id=first.pk, reason="a chunk was parked")

    second = scoring_run_start(trigger="rerun", as_of=END)  # scores only the customers the first did not reach
    AlertRule.objects.create(name="all", trigger=TriggerKind.PROBABILITY, threshold=0.0, action=ActionKind.NONE)
    alerts_apply_rules(actor="test", scoring_run_id=second.pk)

    second.refresh_from_db()
    assert second.status == ScoringRun.Status.SUCCEEDED and second.customers_scored == len(eligible)
    assert ChurnScore.objects.filter(scoring_run=second).count() < len(eligible)
    assert Alert.objects.count() == len(eligible), "every customer scored at that as_of is seen by the rules"


def test_a_rerun_of_churn_score_at_an_as_of_counts_only_its_own_customers(store: None) -> None:
    train()
    call_command("churn_score", f"--as-of={END:%Y-%m-%d}", stdout=io.StringIO())
    # Staff mark three scored customers churned; the operator scores that day again.
    marked = list(ChurnScore.objects.values_list("customer_id", flat=True)[:3])
    Customer.objects.filter(id__in=marked).update(churned=True)
    out = io.StringIO()

    call_command("churn_score", f"--as-of={END:%Y-%m-%d}", stdout=out)

    rerun = ScoringRun.objects.order_by("-id").first()
    eligible = customers_to_score(as_of=END).count()
    assert (rerun.status, rerun.customers_scored, rerun.customers_total) == ("succeeded", eligible, eligible), out
    assert f"{eligible} of {eligible} customers scored" in out.getvalue()


def test_a_run_is_finished_by_its_own_chunks_not_by_an_earlier_runs_scores(store: None) -> None:
    train()
    scoring_run_start(trigger="first", as_of=END)  # scores everybody eligible
    # Then three scored customers are marked churned, and a customer who ordered by then is imported.
    marked = list(ChurnScore.objects.values_list("customer_id", flat=True)[:3])
    Customer.objects.filter(id__in=marked).update(churned=True)
    newcomer = Customer.objects.create(external_id="new", signed_up_at=END - timedelta(days=30))
    newcomer.orders.create(external_id="new-o1", placed_at=END - timedelta(days=3), amount="20.00")
    scored_before = [pk for pk in customers_to_score(as_of=END).values_list("id", flat=True) if pk != newcomer.pk]
    with mock.patch.object(scoring, "_enqueue_chunks"):
        rerun = scoring_run_start(trigger="rerun", as_of=END)

    scoring_run_score_chunk(scoring_run_id=rerun.pk, customer_ids=scored_before)  # the newcomer's chunk is to come

    rerun.refresh_from_db()
    assert (rerun.status, rerun.customers_scored, rerun.customers_total) == (
        ScoringRun.Status.RUNNING,
        len(scored_before),
        len(scored_before) + 1,
    ), "the scores of the customers marked churned do not count for the rerun"
    scoring_run_score_chunk(scoring_run_id=rerun.pk, customer_ids=[newcomer.pk])
    rerun.refresh_from_db()
    assert (rerun.status, rerun.customers_scored) == (ScoringRun.Status.SUCCEEDED, len(scored_before) + 1)


def test_a_customer_deleted_during_a_run_leaves_the_rest_of_the_chunk_scored_and_the_run_finished(
    store: None,
) -> None:
    train()
    eligible = list(customers_to_score(as_of=END).values_list("id", flat=True))
    with mock.patch.object(scoring, "_enqueue_chunks"):
        run = scoring_run_start(trigger="t", as_of=END)
    Customer.objects.filter(pk=eligible[0]).delete()

    assert scoring_run_score_chunk(scoring_run_id=run.pk, customer_ids=eligible) == len(eligible) - 1

    run.refresh_from_db()
    assert run.status == ScoringRun.Status.SUCCEEDED and run.customers_scored == len(eligible) - 1


def test_a_customer_erased_while_their_chunk_is_scored_leaves_the_rest_stored(store: None) -> None:
    """Erased after the chunk read the customers but before it stored their scores: the score of the erased one
    is left out, not inserted against a customer that is gone (a foreign-key error at the commit, which failed the
    whole chunk)."""
    train()
    eligible = list(customers_to_score(as_of=END).values_list("id", flat=True))
    with mock.patch.object(scoring, "_enqueue_chunks"):
        run = scoring_run_start(trigger="t", as_of=END)
    load = scoring.churn_model_load

    def load_then_erase_while_scoring(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        model = load(*args, **kwargs)
        score = model.score

        def score_and_erase(*score_args, **score_kwargs):  # noqa: ANN002, ANN003, ANN202
            batch = score(*score_args, **score_kwargs)
            Customer.objects.filter(pk=eligible[0]).delete()  # meanwhile, in another request
            return batch

        model.score = score_and_erase
        return model

    with mock.patch.object(scoring, "churn_model_load", load_then_erase_while_scoring):
        assert scoring_run_score_chunk(scoring_run_id=run.pk, customer_ids=eligible) == len(eligible) - 1

    assert not ChurnScore.objects.filter(customer_id=eligible[0]).exists()
    assert ChurnScore.objects.filter(scoring_run=run).count() == len(eligible) - 1


def test_an_as_of_in_the_future_is_refused_for_scoring_and_training(store: None) -> None:
    train()
    later = timezone.now() + timedelta(days=30)
    runs_before = ScoringRun.objects.count()

    with pytest.raises(ValueError, match="is in the future"):
        scoring_run_start(trigger="t", as_of=later)
    with pytest.raises(ValueError, match="is in the future"):
        training_run_request(mode="lightgbm", horizon_days=30, actor="t", as_of=later)
    with pytest.raises(CommandError, match="is in the future"):
        call_command("churn_score", f"--as-of={later:%Y-%m-%d}")
    assert ScoringRun.objects.count() == runs_before and TrainingRun.objects.count() == 1
    scoring_run_start(trigger="t", as_of=timezone.now() + timedelta(hours=12))  # the end of today: allowed


@pytest.mark.django_db(transaction=True)
def test_two_runs_at_one_as_of_both_finish_when_every_customer_is_scored(store: None) -> None:
    from predictions.models import ScoringRun
    from predictions.selectors import customers_to_score
    from predictions.services.scoring import scoring_run_score_chunk, scoring_run_start
    from tests.predictions.conftest import STORE_END, train

    train()
    with mock.patch.object(scoring, "_enqueue_chunks"):  # chunks delivered by hand below
        first = scoring_run_start(trigger="nightly", as_of=STORE_END)
        second = scoring_run_start(trigger="operator rerun", as_of=STORE_END)
    ids = list(customers_to_score(as_of=STORE_END).values_list("id", flat=True))
    half = len(ids) // 2
    scoring_run_score_chunk(scoring_run_id=first.pk, customer_ids=ids[:half])
    scoring_run_score_chunk(scoring_run_id=second.pk, customer_ids=ids)  # scores the other half
    scoring_run_score_chunk(scoring_run_id=first.pk, customer_ids=ids[half:])  # nothing left for it
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, second.status) == (ScoringRun.Status.SUCCEEDED, ScoringRun.Status.SUCCEEDED)
    assert first.customers_scored == second.customers_scored == len(ids)
