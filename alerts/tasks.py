"""Celery tasks of the alerts app. Thin: each takes ids and calls one service."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from celery import shared_task
from django.conf import settings

from alerts import conf
from alerts.selectors import DELIVERY_UNKNOWN
from alerts.services import (
    TransientSendError,
    alerts_apply_rules,
    idempotency_records_prune,
    intervention_deliver_webhook,
    intervention_mark_failed,
    intervention_outcomes_record,
    intervention_send_email,
    interventions_requeue_pending,
)
from predictions.services import task_delivery_begin, task_delivery_finish

logger = logging.getLogger(__name__)

# A send redelivered more often than this (its worker keeps dying on it) is parked, not looped.
MAX_DELIVERIES = 3


def _send_with_retries(task, *, name: str, intervention_id: int, send) -> str:  # noqa: ANN001
    # Redeliveries of one message share its task id and retry number; retries and re-enqueued sends do not.
    key = f"intervention-{intervention_id}-{task.request.id}-try-{task.request.retries}"
    if not task_delivery_begin(task_name=name, key=key, max_attempts=MAX_DELIVERIES):
        # A worker killed after the server took the message (before our commit) is what repeats: it may have
        # arrived, so the reason says so, and the customer cooldown counts it as a contact.
        intervention_mark_failed(
            intervention_id=intervention_id, reason=f"{DELIVERY_UNKNOWN}: parked after repeated worker crashes"
        )
        return "failed"
    try:
        status = send(intervention_id=intervention_id)
    except TransientSendError as error:
        task_delivery_finish(task_name=name, key=key)
        if task.request.retries >= conf.send_max_retries():
            intervention_mark_failed(intervention_id=intervention_id, reason=f"gave up after retries: {error}")
            return "failed"
        countdown = min(conf.retry_backoff_seconds() * 2**task.request.retries, 600)
        logger.warning("intervention %s: %s; retry in %ss", intervention_id, error, countdown)
        if task.request.is_eager:
            # In-process (the embedded default): retry here, so that the send is settled when the caller returns.
            time.sleep(min(countdown, conf.eager_retry_delay_cap()))
            # An EagerResult is already computed: get() never waits, even inside another eager task (requeue).
            retry = task.apply(args=[intervention_id], retries=task.request.retries + 1)
            return retry.get(disable_sync_subtasks=False)
        raise task.retry(countdown=countdown, exc=error) from error
    task_delivery_finish(task_name=name, key=key)
    if (delay := conf.test_send_delay_after()) > 0:
        time.sleep(delay)
    return status


@shared_task(
    bind=True,
    name="alerts.send_coupon_email",
    queue="email",
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=None,
    soft_time_limit=90,
    time_limit=120,
)
def send_coupon_email_task(self, intervention_id: int) -> str:  # noqa: ANN001 - Celery binds the task
    """Send one coupon email. Idempotent: the intervention row is locked and sent at most once, so concurrent,
    retried and redelivered tasks send one email. Transient SMTP errors retry with exponential backoff."""
    return _send_with_retries(
        self, name="alerts.send_coupon_email", intervention_id=intervention_id, send=intervention_send_email
    )


@shared_task(
    bind=True,
    name="alerts.deliver_webhook",
    queue="email",
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=None,
    soft_time_limit=60,
    time_limit=90,
)
def deliver_webhook_task(self, intervention_id: int) -> str:  # noqa: ANN001 - Celery binds the task
    """POST one signed webhook. Idempotent: delivered at most once per intervention by us (the receiver gets the
    idempotency key in X-Churnsite-Idempotency-Key); 5xx, 408, 429 and network errors retry with backoff."""
    return _send_with_retries(
        self, name="alerts.deliver_webhook", intervention_id=intervention_id, send=intervention_deliver_webhook
    )


@shared_task(
    bind=True,
    name="alerts.after_scoring",
    queue="default",
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=600,
    time_limit=660,
)
def alerts_after_scoring_task(self, scoring_run_id: int) -> dict[str, int]:  # noqa: ANN001 - Celery binds the task
    """Apply the active rules to a finished scoring run's scores and dispatch their actions. Idempotent: each rule
    applies in one transaction and alerts are unique per customer, rule and period, so a redelivered or repeated
    task creates nothing more."""
    key = f"scoring-run-{scoring_run_id}-{self.request.id}"
    if not task_delivery_begin(task_name="alerts.after_scoring", key=key, max_attempts=MAX_DELIVERIES):
        return {}
    results = alerts_apply_rules(scoring_run_id=scoring_run_id, actor=f"system:scoring-run-{scoring_run_id}")
    task_delivery_finish(task_name="alerts.after_scoring", key=key)
    return {result.rule: result.alerts_created for result in results}


@shared_task(name="alerts.record_outcomes", queue="default", soft_time_limit=1800, time_limit=1860)
def record_outcomes_task() -> dict[str, int]:
    """Mark treated and control customers retained or churned once their horizon has passed. Idempotent."""
    return intervention_outcomes_record()


@shared_task(name="alerts.requeue_pending", queue="default", soft_time_limit=120, time_limit=180)
def requeue_pending_task(older_than_minutes: int = 15) -> int:
    """Enqueue the sends of interventions still pending after ``older_than_minutes`` (a broker outage lost their
    task). Idempotent: a send that already happened is found sent and does nothing."""
    return interventions_requeue_pending(older_than_minutes=older_than_minutes)


@shared_task(name="alerts.prune_idempotency_records", queue="default", soft_time_limit=300, time_limit=360)
def prune_idempotency_records_task() -> int:
    """Delete the stored responses of Idempotency-Key requests older than ``CHURN_RECORDS_KEEP_DAYS`` (the daily
    schedule). Idempotent."""
    return idempotency_records_prune(older_than=timedelta(days=settings.CHURN_RECORDS_KEEP_DAYS))
