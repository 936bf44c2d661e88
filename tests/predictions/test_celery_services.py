"""Training and scoring across real connections: Celery workers fed through Redis, writing to PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from django.db.models import Count
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from churnsite.celery import app as celery_app
from predictions.models import ChurnScore, ModelVersion, ScoringRun, TrainingRun
from predictions.selectors import customers_to_score
from predictions.services.scoring import scoring_run_start, scoring_runs_resume_stalled
from predictions.services.training import training_run_execute
from predictions.tasks import train_model_task
from tests.predictions.conftest import FAST_TRAINING, STORE_END
from tests.services import PROJECT_ROOT, WorkerProcess, beat_send_times, worker_database_url

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

# Unacknowledged messages of a killed worker come back after the Redis visibility timeout, twice this.
SHORT_VISIBILITY = {"CHURN_TRAIN_TIME_LIMIT": "5"}


def _wait_for(condition: Callable[[], bool], timeout: float, message: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(message())
        time.sleep(0.05)


def _purge(*queues: str) -> None:
    with celery_app.connection_for_write() as connection:
        for queue in queues:
            connection.default_channel.queue_purge(queue)


def _leave_the_restore_lock_held_as_a_killed_worker_would() -> None:
    import redis

    script = (
        "import django; django.setup(); from django.conf import settings; "
        "print(settings.CELERY_BROKER_TRANSPORT_OPTIONS.get('unacked_mutex_expire', 300))"
    )
    env = {**os.environ, **SHORT_VISIBILITY, "DJANGO_SETTINGS_MODULE": "churnsite.settings"}
    expire = int(subprocess.check_output([sys.executable, "-c", script], cwd=PROJECT_ROOT, env=env, text=True))
    client = redis.Redis.from_url(celery_app.conf.broker_url)
    client.delete("unacked_mutex")
    assert client.lock("unacked_mutex", timeout=expire).acquire(blocking=False)


def _train_in_process() -> ModelVersion:
    run = TrainingRun.objects.create(mode="lightgbm", as_of=STORE_END, horizon_days=30, config=FAST_TRAINING)
    return training_run_execute(training_run_id=run.pk)


def test_a_worker_killed_mid_scoring_leaves_exactly_one_score_per_customer(store: None, tmp_path: Path) -> None:
    _purge("gpu")
    _train_in_process()
    first = WorkerProcess(queues=["gpu"], log_dir=tmp_path, extra_env=SHORT_VISIBILITY)
    first.wait_ready()
    run = scoring_run_start(trigger="test", as_of=STORE_END, chunk_size=2)
    _wait_for(lambda: ChurnScore.objects.filter(scoring_run=run).exists(), 120, first.log)
    first.kill()
    # Worst case: it died holding kombu's restore lock (as a worker does for a moment on every restore scan).
    _leave_the_restore_lock_held_as_a_killed_worker_would()
    scored_at_kill = ChurnScore.objects.filter(scoring_run=run).count()
    assert scored_at_kill < run.customers_total, "the run finished before the kill; nothing was tested"
    second = WorkerProcess(queues=["gpu"], log_dir=tmp_path, extra_env=SHORT_VISIBILITY)
    try:
        second.wait_ready()
        # The broker redelivers what the dead worker had taken: visibility timeout (10 s) + the held lock (10 s)
        # + one restore tick (10 s). A chunk it lost between taking and recording it (kombu's receive is not
        # atomic) is sent again by the stalled-run sweep, as the 5-minute schedule would, once 30 s passed.
        started = time.monotonic()

        def finished() -> bool:
            if time.monotonic() - started > 30:
                scoring_runs_resume_stalled(idle_seconds=15)
            return ScoringRun.objects.get(pk=run.pk).status == ScoringRun.Status.SUCCEEDED

        _wait_for(
            finished,
            90,
            lambda: (
                f"run not finished: {ScoringRun.objects.get(pk=run.pk).customers_scored}/{run.customers_total}\n"
                + second.log()
            ),
        )
    finally:
        second.stop()
    eligible = set(customers_to_score(as_of=STORE_END).values_list("id", flat=True))
    per_customer = dict(
        ChurnScore.objects.filter(model_version=run.model_version, as_of=run.as_of)
        .values_list("customer_id")
        .annotate(n=Count("id"))
    )
    assert set(per_customer) == eligible and set(per_customer.values()) == {1}, (scored_at_kill, per_customer)


def test_the_training_task_delivered_twice_yields_one_model_version(store: None, tmp_path: Path) -> None:
    queue = "gpu-twice"
    run = TrainingRun.objects.create(mode="lightgbm", as_of=STORE_END, horizon_days=30, config=FAST_TRAINING)
    # The delivery that finds the run leased looks again after 3 s, not a minute: the test waits for it.
    worker = WorkerProcess(
        queues=[queue], log_dir=tmp_path, concurrency=2, extra_env={"CHURN_TRAIN_LEASE_POLL_SECONDS": "3"}
    )
    try:
        worker.wait_ready()
        results = [train_model_task.apply_async(args=[run.pk], queue=queue) for _ in range(2)]
        returned = [result.get(timeout=240) for result in results]
    finally:
        worker.stop()
    versions = list(ModelVersion.objects.filter(training_run=run).values_list("pk", flat=True))
    assert len(versions) == 1, (versions, worker.log())
    assert versions[0] in returned


def test_two_beats_for_three_intervals_yield_three_rescoring_runs_not_six(store: None, tmp_path: Path) -> None:
    _purge("default", "gpu")
    _train_in_process()
    PeriodicTask.objects.update(enabled=False)
    every_3s = IntervalSchedule.objects.create(every=3, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(
        name="rescoring under test",
        task="predictions.rescore_all",
        interval=every_3s,
        queue="default",
        kwargs=json.dumps({"as_of": STORE_END.isoformat(), "trigger": "beat test"}),
    )
    worker = WorkerProcess(queues=["default", "gpu"], log_dir=tmp_path)
    env = {**os.environ, "DATABASE_URL": worker_database_url(), "CELERY_TASK_ALWAYS_EAGER": "false"}
    beats = [
        subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "churnsite", "beat", "-l", "INFO", "--pidfile="],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=(tmp_path / f"beat{i}.log").open("wb"),
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        for i in range(2)
    ]
    beat_logs = [tmp_path / f"beat{i}.log" for i in range(2)]
    runs = ScoringRun.objects.filter(trigger="beat test")
    try:
        worker.wait_ready()
        # Three runs, however late a loaded machine makes the sends or the worker (the runs of a fixed 7.5 s window
        # were three only while neither came over a second late).
        _wait_for(lambda: runs.count() >= 3, 120, worker.log)
        for beat in beats:
            beat.terminate()
            beat.wait(timeout=30)
        sends = beat_send_times(*beat_logs, task="rescoring under test")
        _wait_for(lambda: runs.count() >= len(sends), 60, worker.log)  # the worker runs the sends still queued
        count = runs.count()
    finally:
        for beat in beats:
            beat.terminate()
            beat.wait(timeout=30)
        worker.stop()
    logs = "\n".join(log.read_text(errors="replace")[-1500:] for log in beat_logs)
    gaps = [(later - earlier).total_seconds() for earlier, later in zip(sends, sends[1:], strict=False)]
    assert count == len(sends) >= 3, f"{count} rescoring runs for {len(sends)} sends\n{logs}"
    assert min(gaps) > 1.5, f"rescoring was sent twice within one interval of 3 s: gaps {gaps}\n{logs}"
