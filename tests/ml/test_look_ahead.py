"""Look-ahead guards of training: the holdout is the future of training, the data end bounds the label windows, and
labels by flag never read what came after them."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from ml.baselines import LightGBMOptions
from ml.churn_model import ChurnModel, ChurnModelConfig
from ml.data import CustomerHistory, CustomerRecord, EventRecord, OrderRecord
from ml.hybrid import HybridConfig
from ml.snapshot import EligibilityRule, LabelConfig, flagged_snapshots, is_eligible, labelled_snapshots
from tests.ml.churn_histories import START, churn_histories

FAST_LIGHTGBM = LightGBMOptions(
    num_leaves_grid=(7,), max_rounds=60, early_stopping_rounds=15, min_child_samples=5, n_jobs=1
)
T0 = datetime(2025, 1, 1, tzinfo=UTC)


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


def _features_only(**overrides: object) -> ChurnModelConfig:
    config = ChurnModelConfig(
        horizon_days=30,
        max_training_cutoffs=4,
        hybrid=HybridConfig(text_mode="none", inner_folds=2, lightgbm=FAST_LIGHTGBM),
    )
    return replace(config, **overrides)


# --- 1. with a lead time, training labels read activity after the holdout cutoff -----------------------------


def test_with_a_lead_time_no_training_label_reads_activity_after_the_holdout_cutoff() -> None:
    """Planted signal: two stores that differ only in orders placed after the holdout cutoff (and before the holdout's
    own label window) must give the same training labels; the holdout is meant to be 'the future' of training."""
    config = _features_only(lead_days=20)
    as_of = START + timedelta(days=270)
    holdout_cutoff = as_of - timedelta(days=config.lead_days + config.horizon_days)
    histories = churn_histories(90)
    # The same customers without any order in (holdout cutoff, holdout cutoff + lead]: only post-cutoff data differs.
    hidden = [
        replace(
            h,
            orders=tuple(
                o for o in h.orders if not holdout_cutoff < o.placed_at <= holdout_cutoff + timedelta(days=20)
            ),
        )
        for h in histories
    ]
    seen = ChurnModel(config).fit(histories, as_of=as_of)
    assert seen.metadata["holdout_cutoff"] == holdout_cutoff.isoformat()
    blind = ChurnModel(config).fit(hidden, as_of=as_of)
    assert (seen.holdout_.y_train == blind.holdout_.y_train).all(), (
        "training labels changed with orders placed after the holdout cutoff: the training set saw the holdout's future"
    )


def test_with_a_lead_time_every_training_label_window_ends_by_the_holdout_cutoff() -> None:
    config = _features_only(lead_days=20)
    model = ChurnModel(config).fit(churn_histories(90), as_of=START + timedelta(days=270))
    holdout = datetime.fromisoformat(str(model.metadata["holdout_cutoff"]))
    ends = [config.labels.window(datetime.fromisoformat(c))[1] for c in model.metadata["cutoffs"][1:]]
    assert all(end <= holdout for end in ends), f"training windows end at {ends}, after the holdout cutoff {holdout}"


# --- 2. training at an as_of after the data ends makes up churn labels ---------------------------------------


def test_fit_refuses_an_as_of_whose_holdout_label_window_outlasts_the_data() -> None:
    """The data stop at day 300; at as_of = day 330 the holdout window (day 300, 330] has no data at all, so every
    customer would look inactive there. backtest_data refuses this ("inactivity labels would be made up");
    ChurnModel.fit (what every training run uses) does not."""
    histories = churn_histories(90, days=300)
    data_end = max(h.last_timestamp for h in histories if h.last_timestamp is not None)
    as_of = data_end + timedelta(days=30)
    with pytest.raises(ValueError):
        ChurnModel(_features_only(horizon_days=90)).fit(histories, as_of=as_of)


# --- 3. flag labels: the snapshot of a churner is taken after the churn -------------------------------------


def test_a_flag_labelled_churner_is_not_snapshotted_after_the_churn() -> None:
    """labels_from='flag' with a dated churn: the row is labelled 'churned' but its features are read at as_of, long
    after churned_at, so days since the last order (200 here) is the churn itself, not a sign before it."""
    churner = CustomerHistory(
        customer=CustomerRecord(id="gone", signed_up_at=day(0), churned=True, churned_at=day(100)),
        orders=tuple(OrderRecord(placed_at=day(d), amount=20.0) for d in range(0, 101, 10)),
    )
    stayer = CustomerHistory(
        customer=CustomerRecord(id="here", signed_up_at=day(0), churned=False),
        orders=tuple(OrderRecord(placed_at=day(d), amount=20.0) for d in range(0, 301, 10)),
    )
    rows = flagged_snapshots([churner, stayer], day(300))
    gone = next(r for r in rows if r.snapshot.customer.id == "gone")
    assert gone.snapshot.as_of < churner.customer.churned_at, (
        f"the churner's features are read at {gone.snapshot.as_of:%Y-%m-%d}, after the churn at "
        f"{churner.customer.churned_at:%Y-%m-%d}: post-churn inactivity becomes a feature of the label"
    )


# --- 4. a churn flag without a time (known only now) decides eligibility at past cutoffs ---------------------


def test_a_timeless_churn_flag_does_not_decide_eligibility_at_a_past_cutoff() -> None:
    """Planted: two identical customers, one flagged churned today (no time). At a cutoff at which both are plainly
    active (they kept ordering for months after it), the flag known only now removes one of them from the training
    population: selection on the outcome (customers who eventually churned never reach training or the holdout)."""
    orders = tuple(OrderRecord(placed_at=day(d), amount=20.0) for d in range(0, 300, 7))
    flagged = CustomerHistory(customer=CustomerRecord(id="f", signed_up_at=day(0), churned=True), orders=orders)
    plain = CustomerHistory(customer=CustomerRecord(id="p", signed_up_at=day(0)), orders=orders)
    cutoff = day(150)
    rule = EligibilityRule()
    assert is_eligible(plain, cutoff, rule=rule, activity="orders")
    assert is_eligible(flagged, cutoff, rule=rule, activity="orders") == is_eligible(
        plain, cutoff, rule=rule, activity="orders"
    ), "a churn flag set later (no time) excluded a customer active at the cutoff"
    rows = labelled_snapshots([flagged, plain], [cutoff], config=LabelConfig(horizon_days=30))
    assert {r.snapshot.customer.id for r in rows} == {"f", "p"}


def _churner_with_a_cancellation(churned_at: datetime) -> CustomerHistory:
    return CustomerHistory(
        customer=CustomerRecord(
            id="c1", signed_up_at=datetime(2025, 1, 1, tzinfo=UTC), churned=True, churned_at=churned_at
        ),
        events=(
            EventRecord("page_view", datetime(2025, 3, 1, tzinfo=UTC), {}),
            EventRecord("cancel_subscription", churned_at, {}),
        ),
    )


@pytest.mark.parametrize(
    "churned_at", [datetime(2025, 5, 31, 23, 59, 59, tzinfo=UTC), datetime(2025, 6, 1, tzinfo=UTC)]
)
def test_the_churn_itself_is_not_a_feature_of_a_flag_label_even_at_the_as_of(churned_at: datetime) -> None:
    (row,) = flagged_snapshots([_churner_with_a_cancellation(churned_at)], datetime(2025, 6, 1, tzinfo=UTC))
    assert [e.kind for e in row.snapshot.events] == ["page_view"], "the churn event leaks into the features"


# --- 5. flag labels: a model trained later holds out no customer an earlier one trained on -------------------


def _profiles(n: int) -> list[CustomerHistory]:
    """Profile customers (no orders): a plan attribute that carries most of the churn flag."""
    histories = []
    for i in range(n):
        plan = ("monthly", "yearly")[i % 2]
        churned = (i % 7 < 4) if plan == "monthly" else (i % 7 == 0)
        record = CustomerRecord(id=f"p{i}", signed_up_at=day(0), churned=churned, attributes={"plan": plan, "n": i % 5})
        histories.append(CustomerHistory(customer=record))
    return histories


def test_a_profile_model_trained_later_with_new_customers_holds_out_none_an_earlier_one_trained_on() -> None:
    """A single-cutoff holdout is chosen by a hash of each customer's id and the seed: a retraining after new
    customers were imported (another as_of, other rows) keeps every old customer on its side, so the champion can be
    measured on the challenger's holdout. A random sample of the rows drawn again gave the champion's training
    customers to the challenger's holdout (about 4 in 5 of them), where the champion would be graded on what it learned."""
    config = _features_only(labels_from="flag", max_training_cutoffs=None)
    first, later = (ChurnModel(config).fit(_profiles(n), as_of=day(300 + extra)) for n, extra in ((300, 0), (400, 30)))
    first_training = {f"p{i}" for i in range(300)} - first.holdout_customer_ids_

    assert first.metadata["holdout_split"] == later.metadata["holdout_split"] == "customer-hash"
    assert 0.1 < len(later.holdout_customer_ids_) / 400 < 0.3, "about holdout_fraction (0.2) of the customers"
    assert not later.holdout_customer_ids_ & first_training
    assert first.holdout_customer_ids_ <= later.holdout_customer_ids_
    other_seed = ChurnModel(replace(config, seed=1)).fit(_profiles(300), as_of=day(300))
    assert other_seed.holdout_customer_ids_ != first.holdout_customer_ids_
