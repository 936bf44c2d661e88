from __future__ import annotations

from datetime import timedelta

import pytest

from predictions.models import DriftEvent, ModelVersion, TrainingRun
from predictions.services.drift import drift_check
from predictions.services.scoring import scoring_run_start
from tests.predictions.conftest import STORE_END, train

pytestmark = pytest.mark.django_db


def test_drift_is_stable_on_familiar_data_and_flags_a_shift_with_a_retraining(
    store: None,
    django_capture_on_commit_callbacks,  # noqa: ANN001
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        run = train()
    version = ModelVersion.objects.get(training_run=run)
    assert version.reference_profile["scores"]["kind"] == "numeric" and version.reference_profile["features"]
    # Scored on the population it was profiled on (its newest training cutoff), nothing has moved.
    with django_capture_on_commit_callbacks(execute=True):
        scoring_run_start(trigger="test", as_of=STORE_END - timedelta(days=30))
    stable = drift_check()
    assert stable is not None and not stable.drifted and stable.training_run is None, stable.feature_psi
    # Half a year without data later, every recency feature and the scores have moved.
    with django_capture_on_commit_callbacks(execute=True):
        scoring_run_start(trigger="test", as_of=STORE_END + timedelta(days=180))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        shifted = drift_check()
    assert shifted.drifted and shifted.max_psi > shifted.threshold
    assert shifted.training_run.status == TrainingRun.Status.PENDING and len(callbacks) == 1
    assert DriftEvent.objects.count() == 2


def test_a_training_run_whose_task_was_lost_does_not_block_drift_retraining_forever(settings) -> None:  # noqa: ANN001
    from django.utils import timezone

    from predictions.selectors import training_in_progress

    now = timezone.now()
    pending = TrainingRun.objects.create(mode="lightgbm", horizon_days=30, as_of=now, started_by="t")
    assert training_in_progress()  # waiting for a worker: busy
    old = now - timedelta(seconds=2 * settings.CHURN_TRAIN_TIME_LIMIT + 60)
    TrainingRun.objects.filter(pk=pending.pk).update(created_at=old)
    assert not training_in_progress()  # its message is long gone
    TrainingRun.objects.filter(pk=pending.pk).update(
        status=TrainingRun.Status.RUNNING, lease_expires_at=now + timedelta(minutes=5)
    )
    assert training_in_progress()  # an old run still working under a live lease
    TrainingRun.objects.filter(pk=pending.pk).update(lease_expires_at=now - timedelta(minutes=5))
    assert not training_in_progress()  # its worker died and nobody took it over


def test_the_weekly_retraining_is_not_requested_while_a_training_is_under_way(
    django_capture_on_commit_callbacks,  # noqa: ANN001
) -> None:
    from django.utils import timezone

    from predictions.tasks import retrain_task

    busy = TrainingRun.objects.create(mode="lightgbm", horizon_days=30, as_of=timezone.now(), started_by="drift")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert retrain_task.run(mode="lightgbm", horizon_days=30) is None
    assert list(TrainingRun.objects.values_list("pk", flat=True)) == [busy.pk] and not callbacks
    TrainingRun.objects.filter(pk=busy.pk).update(status=TrainingRun.Status.FAILED)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        requested = retrain_task.run(mode="lightgbm", horizon_days=30)
    assert requested != busy.pk and TrainingRun.objects.get(pk=requested).status == TrainingRun.Status.PENDING
    assert len(callbacks) == 1
