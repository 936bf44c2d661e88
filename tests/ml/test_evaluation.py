"""The evaluation harness: cross-validation of profile data and the time-based backtest of histories."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from ml.data import CustomerHistory, CustomerRecord, MessageRecord, OrderRecord
from ml.evaluation import (
    MODEL_REGISTRY,
    BacktestSetup,
    FoldData,
    backtest,
    backtest_data,
    cross_validate_profile,
    format_report,
    register_model,
)
from ml.features import prepare_profile
from ml.snapshot import LabelConfig

START = datetime(2024, 1, 1, tzinfo=UTC)


def profile(n: int = 200, seed: int = 0, with_recency: bool = False):  # noqa: ANN201
    rng = np.random.default_rng(seed)
    contract = rng.choice(["monthly", "yearly"], n)
    tenure = rng.integers(0, 72, n)
    churn = rng.random(n) < np.where(contract == "monthly", 0.5, 0.1) * np.where(tenure < 12, 1.5, 0.7)
    raw = pd.DataFrame({"id": [f"c{i}" for i in range(n)], "contract": contract, "tenure": tenure.astype(str)})
    if with_recency:
        raw["DaySinceLastOrder"] = (rng.integers(0, 30, n) + 20 * churn).astype(str)
    raw["Churn"] = np.where(churn, "Yes", "No")
    return prepare_profile(raw, label_col="Churn", positive="Yes", id_col="id", name="synthetic")


class _KeywordTextModel:
    """A text model for the registry test: churn when the text says 'monthly'."""

    def __init__(self, train: FoldData) -> None:
        assert train.texts is not None and len(train.texts) == len(train.y)

    def predict_proba(self, data: FoldData) -> np.ndarray:
        churn = np.array([0.7 if "contract: monthly" in text else 0.2 for text in data.texts or []])
        return np.column_stack([1 - churn, churn])


def test_cross_validation_reports_every_metric_and_skips_what_does_not_apply() -> None:
    report = cross_validate_profile(profile(), models=["recency", "logreg"], folds=3, progress=False)
    assert "recency" in report.skipped and "recency" not in report.per_fold
    assert len(report.per_fold["logreg"]) == 3
    document = json.loads(json.dumps(report.to_json()))
    assert document["n"] == 200 and document["dataset"] == "synthetic"
    logreg = document["models"]["logreg"]
    assert set(logreg) >= {"roc_auc", "roc_auc_std", "pr_auc", "lift_at_10", "brier", "ece"}
    assert logreg["roc_auc"] > 0.6
    assert "recency" in format_report(report) and "skipped" in format_report(report)


def test_recency_applies_when_the_file_has_days_since_last_order() -> None:
    report = cross_validate_profile(profile(with_recency=True), models=["recency"], folds=3, progress=False)
    assert report.summary("recency")["roc_auc"] > 0.8


def test_registered_text_model_gets_the_fold_texts() -> None:
    register_model("keyword", _KeywordTextModel, needs_text=True)
    try:
        report = cross_validate_profile(profile(), models=["keyword"], folds=3, progress=False)
    finally:
        MODEL_REGISTRY.pop("keyword")
    assert report.summary("keyword")["roc_auc"] > 0.6


def test_unknown_model_name_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown model"):
        cross_validate_profile(profile(), models=["nope"], progress=False)


def store(n: int = 150, seed: int = 0) -> list[CustomerHistory]:
    """Customers ordering every few days; about a third stop at a random day (they churn)."""
    rng = np.random.default_rng(seed)
    histories = []
    for i in range(n):
        stop = rng.uniform(60, 500) if rng.random() < 0.35 else 10_000
        gap = rng.uniform(4, 20)
        days = np.arange(rng.uniform(0, 30), min(stop, 480), gap)
        orders = tuple(OrderRecord(placed_at=START + timedelta(days=float(d)), amount=20.0) for d in days)
        messages = (MessageRecord(sent_at=START + timedelta(days=5), text="hello"),)
        histories.append(
            CustomerHistory(customer=CustomerRecord(id=f"c{i}", segment="a"), orders=orders, messages=messages)
        )
    return histories


def test_backtest_trains_on_earlier_cutoffs_and_tests_at_as_of() -> None:
    setup = BacktestSetup(as_of=START + timedelta(days=390), labels=LabelConfig(horizon_days=60, lead_days=7))
    data = backtest_data(store(), setup)
    assert data.cutoffs[0] == setup.as_of - timedelta(days=67)
    assert list(data.train.frame.columns) == list(data.test.frame.columns)
    assert set(data.train.y) == {0, 1} and set(data.test.y) == {0, 1}
    report = backtest(store(), setup, models=["recency", "logreg"], progress=False)
    assert report.summary("recency")["roc_auc"] > 0.7
    assert report.summary("logreg")["roc_auc_std"] > 0, "bootstrap spread"
    assert report.to_json()["train_n"] == len(data.train.y)


def test_backtest_refuses_a_test_window_past_the_end_of_the_data() -> None:
    setup = BacktestSetup(as_of=START + timedelta(days=450), labels=LabelConfig(horizon_days=60))
    with pytest.raises(ValueError, match="before the test label window ends"):
        backtest_data(store(), setup)


def test_backtest_without_room_for_a_training_cutoff_says_so() -> None:
    setup = BacktestSetup(as_of=START + timedelta(days=60), labels=LabelConfig(horizon_days=60))
    with pytest.raises(ValueError, match="no training cutoff fits"):
        backtest_data(store(), setup)


def test_training_data_is_unchanged_when_everything_after_as_of_is_deleted() -> None:
    from dataclasses import replace as copy_with

    setup = BacktestSetup(as_of=START + timedelta(days=390), labels=LabelConfig(horizon_days=60, lead_days=7))
    full = store()
    cut = [
        copy_with(
            h,
            orders=tuple(o for o in h.orders if o.placed_at <= setup.as_of),
            messages=tuple(m for m in h.messages if m.sent_at <= setup.as_of),
        )
        for h in full
    ]
    # A customer who first orders long after as_of keeps the data's end date the same for both stores
    # (the test labels need it) and is never eligible before then.
    late = CustomerHistory(
        customer=CustomerRecord(id="late"),
        orders=(OrderRecord(placed_at=START + timedelta(days=1000), amount=1.0),),
    )
    with_future = backtest_data([*full, late], setup).train
    without_future = backtest_data([*cut, late], setup).train
    pd.testing.assert_frame_equal(with_future.frame, without_future.frame)
    assert with_future.y.tolist() == without_future.y.tolist() and with_future.ids == without_future.ids


def test_evaluation_texts_are_checked_with_the_encoders_tokenizer_as_the_churn_model_does() -> None:
    def count_heavily(text: str) -> int:  # a tokenizer that counts far more than the approximation
        return 20 * len(text)

    setup = BacktestSetup(as_of=START + timedelta(days=390), labels=LabelConfig(horizon_days=60, lead_days=7))
    approximate = backtest_data(store(40), setup, with_texts=True)
    checked = backtest_data(store(40), setup, with_texts=True, check_tokens=count_heavily)
    assert max(map(count_heavily, checked.train.texts)) <= 256 < max(map(count_heavily, approximate.train.texts))
    # What TF-IDF reads, as a trained TF-IDF model would: the texts before the check.
    assert checked.train.unchecked_texts == approximate.train.texts and approximate.train.unchecked_texts is None
    assert checked.train.take(np.array([1, 0])).unchecked_texts == approximate.train.texts[1::-1]
    longest: dict[str, int] = {}
    for name, check in (("approximate", None), ("checked", count_heavily)):
        register_model("text_length", lambda fold, name=name: _Longest(longest, name, fold), needs_text=True)
        try:
            cross_validate_profile(profile(), models=["text_length"], folds=3, check_tokens=check, progress=False)
        finally:
            MODEL_REGISTRY.pop("text_length")
    assert 20 * longest["checked"] <= 256 < 20 * longest["approximate"]


class _Longest:
    """A text model that records the length of the longest text it was given."""

    def __init__(self, longest: dict[str, int], name: str, fold: FoldData) -> None:
        longest[name] = max(longest.get(name, 0), *map(len, fold.texts or []))

    def predict_proba(self, fold: FoldData) -> np.ndarray:
        return np.full((len(fold.y), 2), 0.5)


def test_backtest_bootstrap_draws_its_resamples_as_it_uses_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bootstrap's resamples (each as large as the test side) are drawn from the same seed for every model as
    they are used, instead of all of them being held through every model's fit."""
    import weakref

    import ml.evaluation

    real_rng = np.random.default_rng
    drawn: list[weakref.ref] = []

    class TrackingRng:
        def __init__(self, seed: object = None) -> None:
            self._rng = real_rng(seed)

        def integers(self, *args: object, **kwargs: object) -> np.ndarray:
            out = self._rng.integers(*args, **kwargs)
            drawn.append(weakref.ref(out))
            return out

        def __getattr__(self, name: str) -> object:
            return getattr(self._rng, name)

    held: list[int] = []
    real_metrics = ml.evaluation.churn_metrics

    def counting_metrics(*args: object, **kwargs: object) -> dict[str, float]:
        held.append(sum(ref() is not None for ref in drawn))
        return real_metrics(*args, **kwargs)

    monkeypatch.setattr(np.random, "default_rng", TrackingRng)
    monkeypatch.setattr(ml.evaluation, "churn_metrics", counting_metrics)
    setup = BacktestSetup(as_of=START + timedelta(days=390), labels=LabelConfig(horizon_days=60, lead_days=7))
    report = backtest(store(), setup, models=["recency", "logreg"], bootstrap=30, progress=False)
    assert max(held) <= 2  # not the 30 resamples held at once
    assert len(drawn) >= 60  # drawn again, from the same seed, for each model
    assert report.summary("logreg")["roc_auc_std"] > 0
