"""Look-ahead guards on the Django side: champion comparisons, the backtest's as-of day, training past the data's end."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.db.models import Max

from customers.models import Customer, Order
from predictions.models import ModelStatus, ModelVersion, ScoringRun
from predictions.selectors import customer_histories
from tests.predictions.conftest import FAST_TRAINING, STORE_END, train

# --- champion re-measured on a holdout its own training labels covered -------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_champion_is_not_re_measured_on_a_holdout_it_was_trained_on(store: None, monkeypatch) -> None:  # noqa: ANN001
    """The champion was trained at STORE_END (horizon 30: holdout END-30, training cutoffs END-60 and END-90). A
    challenger trained at END-30 has its frozen holdout at END-60, whose rows and labels were champion *training*
    rows. _champion_metrics_on re-measures the champion there anyway, and promotion compares the challenger's honest
    holdout figure against the champion's in-sample one."""
    from predictions.services import training as training_service

    champion = ModelVersion.objects.get(training_run=train())
    assert champion.status == ModelStatus.CHAMPION
    measured: list[tuple[str, object]] = []
    original = training_service._champion_metrics_on

    def spy(model, champion_version, histories, as_of):  # noqa: ANN001, ANN202
        result = original(model, champion_version, histories, as_of)
        measured.append((str(model.metadata["holdout_cutoff"]), result))
        return result

    monkeypatch.setattr(training_service, "_champion_metrics_on", spy)
    train(as_of=STORE_END - timedelta(days=30))
    holdout_cutoff, champion_metrics = measured[0]
    assert holdout_cutoff in champion.training_cutoffs[1:], (
        "setup: the challenger's holdout is a champion training cutoff"
    )
    assert champion_metrics is None, (
        f"the champion was re-measured (ROC AUC {champion_metrics['roc_auc']:.3f}, own holdout "  # type: ignore[index]
        f"{champion.metrics['roc_auc']:.3f}) on the cutoff {holdout_cutoff} it was trained on"
    )


# --- churn_backtest: the last second of the --as-of day falls into the label window -------------------------


class _Captured(Exception):
    pass


@pytest.mark.django_db
def test_backtest_as_of_day_includes_its_last_second(monkeypatch) -> None:  # noqa: ANN001
    """--as-of 2025-06-30 means the end of that day, but the cutoff is 23:59:59.000: an order at 23:59:59.5 on the
    as-of day is left out of the test snapshot and counted as activity in the label window (its label flips to 0)."""
    import ml.evaluation as evaluation
    from ml.snapshot import churn_label, snapshot_at

    customer = Customer.objects.create(external_id="late", signed_up_at=datetime(2025, 1, 1, tzinfo=UTC))
    Order.objects.create(external_id="o1", customer=customer, placed_at=datetime(2025, 3, 1, tzinfo=UTC), amount="10")
    last_second = datetime(2025, 6, 30, 23, 59, 59, 500000, tzinfo=UTC)
    Order.objects.create(external_id="o2", customer=customer, placed_at=last_second, amount="10")
    captured = {}

    def fake_backtest(histories, setup, **kwargs):  # noqa: ANN001, ANN003, ANN202
        captured["setup"] = setup
        raise _Captured

    monkeypatch.setattr(evaluation, "backtest", fake_backtest)
    with pytest.raises(_Captured):
        call_command("churn_backtest", "--as-of", "2025-06-30", "--horizon-days", "30", "--no-progress")
    setup = captured["setup"]
    history = customer_histories()[0]
    assert history.orders[-1].placed_at == last_second, "the database keeps the sub-second time"
    snapshot = snapshot_at(history, setup.as_of)
    assert [o.placed_at for o in snapshot.orders][-1] == last_second, (
        f"an order on the as-of day ({last_second}) is missing from the snapshot at {setup.as_of}"
    )
    assert churn_label(history, setup.as_of, setup.labels) == 1, "the as-of day's order counted as future activity"


# --- a training run at an as_of after the data ends labels the unrecorded days as inactivity ----------------


@pytest.mark.django_db(transaction=True)
def test_a_training_run_past_the_end_of_the_data_does_not_make_up_churn_labels(store: None) -> None:
    """The store's data end at STORE_END. A run at STORE_END + 10 days (an import that lags ten days; a request's
    as_of defaults to now) has a holdout window of which the last 10 days were never recorded: customers who would
    have ordered then are labelled churned. churn_backtest refuses this; training registers a model on it."""
    from predictions.models import TrainingRun
    from predictions.services.training import TrainingError

    honest = ModelVersion.objects.get(training_run=train())
    try:
        run = train(as_of=STORE_END + timedelta(days=10))
    except TrainingError:
        return  # refused: what a fix would do
    run.refresh_from_db()
    lagging = ModelVersion.objects.filter(training_run=run).first()
    assert run.status == TrainingRun.Status.FAILED or lagging is None, (
        f"a model was trained with made-up inactivity labels: holdout positive rate "
        f"{lagging.metrics['positive_rate']:.3f} against {honest.metrics['positive_rate']:.3f} on complete data"
    )


@pytest.mark.django_db
def test_a_training_request_without_as_of_trains_where_the_data_ends_when_that_is_before_now(store: None) -> None:

    from predictions.services.training import training_run_request

    latest = Order.objects.aggregate(at=Max("placed_at"))["at"]
    run = training_run_request(mode="lightgbm", horizon_days=30, actor="test")
    assert latest < STORE_END + timedelta(days=1) and run.as_of == latest


@pytest.mark.django_db
def test_training_leaves_out_only_customers_treated_by_its_as_of() -> None:
    from alerts.models import ActionKind, Alert, AlertRule, Intervention, TriggerKind
    from alerts.selectors import treated_customer_ids
    from tests.alerts.helpers import customer_make

    rule = AlertRule.objects.create(
        name="r", trigger=TriggerKind.PROBABILITY, threshold=0.5, action=ActionKind.COUPON_EMAIL, holdout_fraction=0
    )
    early, late = customer_make(1), customer_make(2)
    for customer, sent_at in ((early, datetime(2026, 1, 10, tzinfo=UTC)), (late, datetime(2026, 3, 10, tzinfo=UTC))):
        alert = Alert.objects.create(
            customer=customer, rule=rule, period_start=sent_at.date(), as_of=sent_at, probability=0.9, risk_tier="high"
        )
        Intervention.objects.create(
            alert=alert, customer=customer, kind=ActionKind.COUPON_EMAIL, status="sent", sent_at=sent_at,
            idempotency_key=f"k{customer.pk}",
        )  # fmt: skip
    assert set(treated_customer_ids(until=datetime(2026, 2, 1, tzinfo=UTC))) == {early.pk}
    assert set(treated_customer_ids()) == {early.pk, late.pk}


@pytest.mark.django_db(transaction=True)
def test_scoring_without_as_of_scores_where_the_data_ends_when_that_is_long_before_now(store: None) -> None:
    """A demo store generated long ago, or an import that stopped: scoring at now would read every day since as
    inactivity; without --as-of it scores where the data ends (and, a backfill then, raises no alert)."""
    from predictions.services.training import training_run_request

    data_end = Order.objects.aggregate(at=Max("placed_at"))["at"]
    run = training_run_request(mode="lightgbm", horizon_days=30, actor="test", options=FAST_TRAINING)
    run.refresh_from_db()
    assert run.as_of == data_end
    call_command("churn_score", stdout=io.StringIO())
    scoring = ScoringRun.objects.order_by("-id").first()
    assert scoring.as_of == data_end and scoring.status == ScoringRun.Status.SUCCEEDED
