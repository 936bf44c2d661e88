"""Celery tasks of the predictions app. Thin: each loads ids and calls one service."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from celery import shared_task
from django.conf import settings
from django.db import OperationalError

from predictions.selectors import retraining_options
from predictions.services import (
    churn_scores_prune,
    task_deliveries_prune,
    task_delivery_begin,
    task_delivery_finish,
    task_delivery_release,
    worker_heartbeat_record,
)
from predictions.services.drift import drift_check
from predictions.services.scoring import (
    ChampionUnavailable,
    scoring_run_mark_failed,
    scoring_run_score_chunk,
    scoring_run_start,
    scoring_runs_resume_stalled,
)
from predictions.services.training import (
    training_run_execute,
    training_run_lease_seconds_left,
    training_run_mark_failed,
    training_run_request_unless_running,
    training_runs_resume_lost,
)

logger = logging.getLogger(__name__)

# A task redelivered more often than this (its worker keeps dying on it) is parked, not looped.
MAX_DELIVERIES = 3
TRANSIENT_ERRORS = (OperationalError,)


@shared_task(bind=True, name="predictions.worker_heartbeat", queue="default", soft_time_limit=30, time_limit=60)
def worker_heartbeat_task(self, queue: str = "default") -> int:  # noqa: ANN001 - Celery binds the task
    """Record that a worker consumed ``queue``. Idempotent: one row per worker and queue, updated."""
    return worker_heartbeat_record(hostname=self.request.hostname or "unknown", queue=queue).pk


@shared_task(
    bind=True,
    name="predictions.train_model",
    queue="gpu",
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=None,  # it only waits while another worker holds a live lease: it ends when the run does
    soft_time_limit=settings.CHURN_TRAIN_TIME_LIMIT - 60,
    time_limit=settings.CHURN_TRAIN_TIME_LIMIT,
)
def train_model_task(self, training_run_id: int) -> int | None:  # noqa: ANN001 - Celery binds the task
    """Train the model of one TrainingRun. Idempotent: a database lease makes a redelivered task a no-op.

    A delivery that finds the run leased by another worker comes back every minute (``CHURN_TRAIN_LEASE_POLL_SECONDS``;
    sooner when the lease ends sooner) until the run is done, or its lease has run out and this delivery takes it over: the redelivery that
    follows a killed worker arrives at once, while the dead worker's lease still runs.
    """
    key = f"training-run-{training_run_id}"
    if not self.request.is_eager and (held := training_run_lease_seconds_left(training_run_id=training_run_id)):
        # Another delivery holds a live lease: look again later. Polls start no work, so they are not counted as
        # deliveries; counted, they would park the run at the first real crash of its worker.
        raise self.retry(countdown=min(held + 5, settings.CHURN_TRAIN_LEASE_POLL_SECONDS))
    # Deliveries that start the work beyond MAX_DELIVERIES are worker crashes.
    if not task_delivery_begin(task_name="predictions.train_model", key=key, max_attempts=MAX_DELIVERIES):
        training_run_mark_failed(training_run_id=training_run_id, reason="parked after repeated worker crashes")
        return None
    version = training_run_execute(training_run_id=training_run_id)
    held = None if self.request.is_eager else training_run_lease_seconds_left(training_run_id=training_run_id)
    if version is None and held is not None:
        # Another delivery took the lease between the check above and ours: this one did no work.
        task_delivery_release(task_name="predictions.train_model", key=key)
        raise self.retry(countdown=min(held + 5, settings.CHURN_TRAIN_LEASE_POLL_SECONDS))
    task_delivery_finish(task_name="predictions.train_model", key=key)
    return version.pk if version else None


@shared_task(
    bind=True,
    name="predictions.score_chunk",
    queue="gpu",
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=5,
    retry_backoff_max=300,
    max_retries=5,
    soft_time_limit=600,
    time_limit=660,
)
def score_chunk_task(self, scoring_run_id: int, customer_ids: list[int]) -> int:  # noqa: ANN001
    """Score one chunk of a scoring run. Idempotent: customers already scored for the run are skipped."""
    key = f"scoring-run-{scoring_run_id}-{min(customer_ids, default=0)}-{len(customer_ids)}"
    # Retries after a transient error start the task again; only deliveries beyond them count as worker crashes.
    attempts = MAX_DELIVERIES + self.request.retries
    if not task_delivery_begin(task_name="predictions.score_chunk", key=key, max_attempts=attempts):
        scoring_run_mark_failed(
            scoring_run_id=scoring_run_id,
            reason=f"a chunk of {len(customer_ids)} customers was parked after repeated worker crashes",
        )
        return 0
    stored = scoring_run_score_chunk(scoring_run_id=scoring_run_id, customer_ids=customer_ids)
    task_delivery_finish(task_name="predictions.score_chunk", key=key)
    return stored


@shared_task(name="predictions.rescore_all", queue="default", soft_time_limit=120, time_limit=180)
def rescore_all_task(as_of: str | None = None, trigger: str = "schedule") -> int | None:
    """Start a scoring run of every eligible customer with the champion (the daily schedule).
    Not idempotent by itself: the single-leader beat sends it once per interval."""
    try:
        when = datetime.fromisoformat(as_of) if as_of else None
        if when is not None and when.tzinfo is None:
            when = when.replace(tzinfo=UTC)  # a date or a time without a zone is UTC, as for churn_score --as-of
        run = scoring_run_start(trigger=trigger, as_of=when)
    except (ChampionUnavailable, ValueError) as exc:  # ValueError: an as_of that is not a time, or in the future
        logger.error("rescoring skipped: %s", exc)
        return None
    return run.pk


@shared_task(name="predictions.resume_stalled_scoring", queue="default", soft_time_limit=120, time_limit=180)
def resume_stalled_scoring_task(idle_seconds: int | None = None) -> list[int]:
    """Send again the unscored customers of scoring runs with no progress for a while (the 5-minute schedule).
    Idempotent: the chunks skip customers already scored, and a run that progresses is left alone."""
    return scoring_runs_resume_stalled(idle_seconds=idle_seconds or settings.CHURN_SCORING_STALL_SECONDS)


@shared_task(name="predictions.resume_lost_training", queue="default", soft_time_limit=120, time_limit=180)
def resume_lost_training_task() -> dict[str, list[int]]:
    """Send again the training task of runs still pending with the gpu queue idle (a lost message), and fail runs
    their dead worker left running (the 10-minute schedule). Idempotent: the lease makes repeated sends no-ops."""
    return training_runs_resume_lost(waiting_seconds=settings.CHURN_TRAIN_RESEND_SECONDS)


@shared_task(name="predictions.retrain", queue="default", soft_time_limit=60, time_limit=120)
def retrain_task(mode: str | None = None, horizon_days: int | None = None, actor: str = "schedule") -> int | None:
    """Request a training run (the weekly schedule), unless one is under way; the training itself runs on the gpu
    queue. Returns the new run's id, or None when none was requested."""
    run = training_run_request_unless_running(
        mode=mode or settings.CHURN_DEFAULT_MODE,
        horizon_days=horizon_days or settings.CHURN_HORIZON_DAYS,
        actor=actor,
        options=retraining_options(),
    )
    return run.pk if run is not None else None


@shared_task(name="predictions.check_drift", queue="default", soft_time_limit=540, time_limit=600)
def check_drift_task() -> int | None:
    """Measure drift of the champion (the daily schedule); above the threshold it requests retraining.
    Idempotent enough for a daily schedule: a retraining is not requested while one is pending or running."""
    event = drift_check(actor="daily drift check")
    return event.pk if event else None


@shared_task(name="predictions.prune_task_deliveries", queue="default", soft_time_limit=300, time_limit=360)
def prune_task_deliveries_task() -> int:
    """Delete task delivery records older than ``CHURN_RECORDS_KEEP_DAYS`` (the daily schedule). Idempotent."""
    return task_deliveries_prune(older_than=timedelta(days=settings.CHURN_RECORDS_KEEP_DAYS))


@shared_task(name="predictions.prune_scores", queue="default", soft_time_limit=1740, time_limit=1800)
def prune_scores_task() -> int:
    """Delete the scores older than ``CHURN_SCORES_KEEP_DAYS`` that no reader needs (the daily schedule), in short
    batches for at most 25 minutes (the next day's run goes on), inside its limits. Idempotent: a second run deletes
    nothing more."""
    return churn_scores_prune(older_than=timedelta(days=settings.CHURN_SCORES_KEEP_DAYS), max_seconds=25 * 60)
