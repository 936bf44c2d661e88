"""The model card: the model's holdout figures and the baselines', measured on the same holdout rows."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from ml.baselines import LightGBMOptions
from ml.churn_model import ChurnModel, ChurnModelConfig
from ml.hybrid import HybridConfig
from ml.metrics import roc_auc
from ml.model_card import ModelCardOptions, churn_model_card

from .churn_histories import START, churn_histories

AS_OF = START + timedelta(days=270)
FAST_LIGHTGBM = LightGBMOptions(
    num_leaves_grid=(7,), max_rounds=60, early_stopping_rounds=15, min_child_samples=5, n_jobs=1
)


@pytest.fixture(scope="module")
def model() -> ChurnModel:
    config = ChurnModelConfig(
        horizon_days=60,
        max_training_cutoffs=3,
        hybrid=HybridConfig(text_mode="none", inner_folds=2, lightgbm=FAST_LIGHTGBM),
    )
    return ChurnModel(config).fit(churn_histories(90), as_of=AS_OF)


@pytest.fixture(scope="module")
def card(model: ChurnModel) -> dict:
    return churn_model_card(model, options=ModelCardOptions(roc_points=20))


def test_the_card_describes_the_model_on_its_own_holdout(model: ChurnModel, card: dict) -> None:
    entry = card["models"][0]
    metadata = model.metadata
    assert entry["key"] == "model" and entry["label"] == "this model (lightgbm)"
    assert entry["metrics"]["roc_auc"] == pytest.approx(model.holdout_metrics["roc_auc"], abs=1e-5)
    assert entry["metrics"]["lift_at_10"] == pytest.approx(model.holdout_metrics["lift_at_10"], abs=1e-5)
    assert card["holdout"]["n"] == metadata["n_holdout"] and card["training"]["n"] == metadata["n_train"]
    assert card["holdout"]["positive_rate"] == pytest.approx(model.holdout_metrics["positive_rate"], abs=1e-5)
    assert card["holdout"]["cutoff"] == metadata["holdout_cutoff"] == metadata["cutoffs"][0]
    assert card["training"]["cutoffs"] == metadata["cutoffs"][1:]


def test_every_baseline_is_scored_on_the_same_holdout_rows(model: ChurnModel, card: dict) -> None:
    holdout = model.holdout_
    by_key = {entry["key"]: entry for entry in card["models"]}
    assert list(by_key) == ["model", "recency", "logreg", "lightgbm"] and card["skipped"] == {}
    # The recency rule ranks by idle days, so its AUC is that of the holdout rows' days since the last order.
    idle_days = holdout.holdout_frame["days_since_last_order"].fillna(
        holdout.train_frame["days_since_last_order"].median()
    )
    assert by_key["recency"]["metrics"]["roc_auc"] == pytest.approx(roc_auc(holdout.y_holdout, idle_days), abs=1e-4)
    for entry in card["models"]:
        assert sum(b["count"] for b in entry["calibration"]) == len(holdout.y_holdout), entry["key"]
        assert 2 <= len(entry["roc"]["fpr"]) <= 20 and entry["roc"]["tpr"][-1] == 1.0, entry["key"]


def test_the_card_is_plain_json_without_nan(card: dict) -> None:
    assert json.loads(json.dumps(card, allow_nan=False)) == card


def test_a_loaded_model_has_no_holdout_to_describe(model: ChurnModel, tmp_path: Path) -> None:
    model.save(tmp_path / "model")
    reloaded = ChurnModel.load(tmp_path / "model")
    assert reloaded.holdout_ is None
    with pytest.raises(ValueError, match="loaded, not fitted"):
        churn_model_card(reloaded)


def test_kept_holdout_probabilities_are_the_model_predictions(model: ChurnModel) -> None:
    from datetime import datetime

    from ml.snapshot import labelled_snapshots

    cutoff = datetime.fromisoformat(model.metadata["holdout_cutoff"])
    rows = labelled_snapshots(
        churn_histories(90), [cutoff], config=model.config.labels, rule=model.config.eligibility, label_until=AS_OF
    )
    np.testing.assert_allclose(model.predict_proba([r.snapshot for r in rows]), model.holdout_.probability, atol=1e-9)
    assert [r.label for r in rows] == model.holdout_.y_holdout.tolist()


def test_unknown_baselines_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown baseline"):
        ModelCardOptions(baselines=("recency", "oracle"))
