"""Callers racing on real PostgreSQL connections: the registry and training requests decide under one lock."""

from __future__ import annotations

import time

import pytest
from django.db import connection

from predictions import tasks as prediction_tasks
from predictions.models import ModelStatus, ModelVersion, TrainingRun
from predictions.services import (
    PromotionPolicy,
    model_version_consider_promotion,
    model_version_promote,
    model_version_register,
    model_version_rollback,
    registry,
)
from predictions.services.training import training_run_request_unless_running
from tests.model_versions import artifact_dir
from tests.services import run_in_threads

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]
POLICY = PromotionPolicy(min_roc_auc_gain=0.002, max_pr_auc_loss=0.0)


def _registered(name: str, roc_auc: float = 0.80) -> ModelVersion:
    return model_version_register(
        name=name,
        model_type="hybrid",
        metrics={"roc_auc": roc_auc, "pr_auc": 0.5},
        holdout_key="same holdout",
        actor="test",
        artifact_path=artifact_dir(),
    )


@pytest.fixture
def slow_champion_change(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first caller holds the registry a moment before it changes the champion, so the second is certain to
    arrive meanwhile (the window is real without the pause; the pause only makes it certain)."""
    make_champion = registry._make_champion

    def slow(**kwargs: object) -> None:
        time.sleep(0.5)
        make_champion(**kwargs)

    monkeypatch.setattr(registry, "_make_champion", slow)


@pytest.mark.parametrize("with_champion", [True, False], ids=["over a champion", "first champion"])
def test_two_training_runs_promoting_at_once_leave_one_champion_and_no_error(
    with_champion: bool, slow_champion_change: None
) -> None:
    """Two challengers that both beat the champion (or the first two models, with no champion row to lock): the
    second waits for the first and is compared with the new champion; neither fails on the one-champion
    constraint (which would crash its training task)."""
    assert connection.vendor == "postgresql"
    if with_champion:
        model_version_promote(model_version=_registered("champion", roc_auc=0.70), actor="test")
    challengers = [_registered("a"), _registered("b")]

    results = run_in_threads(
        2, lambda i: model_version_consider_promotion(model_version=challengers[i], actor=f"run {i}", policy=POLICY)
    )

    assert sorted(map(str, results)) == ["False", "True"], results
    assert ModelVersion.objects.filter(status=ModelStatus.CHAMPION).count() == 1


def test_two_staff_promotions_and_a_rollback_at_once_leave_one_champion_and_no_error(
    slow_champion_change: None,
) -> None:
    """Staff promoting two versions while another rolls back (admin actions, API calls): each waits for the one
    before it and acts on the champion that one left."""
    model_version_promote(model_version=_registered("old"), actor="test")
    model_version_promote(model_version=_registered("current"), actor="test")
    a, b = _registered("a"), _registered("b")
    calls = [
        lambda: model_version_promote(model_version=a, actor="staff a"),
        lambda: model_version_promote(model_version=b, actor="staff b"),
        lambda: model_version_rollback(actor="staff c"),
    ]

    results = run_in_threads(3, lambda i: calls[i]())

    assert not any(isinstance(result, Exception) for result in results), results
    assert ModelVersion.objects.filter(status=ModelStatus.CHAMPION).count() == 1


def test_two_retraining_requests_at_once_request_one_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """The weekly retraining and a drift check (or two ``churn_train --if-idle``) asking at the same moment: the
    second waits until the first has committed its run, then finds it under way."""
    monkeypatch.setattr(prediction_tasks.train_model_task, "delay", lambda *args, **kwargs: None)  # no worker here

    results = run_in_threads(
        2, lambda i: training_run_request_unless_running(mode="lightgbm", horizon_days=60, actor=f"caller {i}")
    )

    assert not any(isinstance(result, Exception) for result in results), results
    assert TrainingRun.objects.count() == 1, list(TrainingRun.objects.values_list("pk", "started_by"))
