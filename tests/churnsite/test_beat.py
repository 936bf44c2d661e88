"""Only one Celery beat sends tasks, however many run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from churnsite.beat import FileLeaderLock
from tests.services import PROJECT_ROOT, beat_send_times, worker_database_url


def test_file_leader_lock_admits_one_holder_until_released(tmp_path: Path) -> None:
    first, second = FileLeaderLock(tmp_path / "beat.lock"), FileLeaderLock(tmp_path / "beat.lock")
    assert first.acquire_or_renew() and first.acquire_or_renew()
    assert not second.acquire_or_renew()
    first.release()
    assert second.acquire_or_renew()


@pytest.mark.django_db(transaction=True)  # the scheduler closes old connections, as a beat process does
def test_a_send_from_an_entry_of_an_earlier_read_of_the_schedule_counts_on_the_current_one(settings) -> None:  # noqa: ANN001
    from churnsite.beat import SingleBeatScheduler
    from churnsite.celery import app

    settings.REDIS_URL = ""  # a file lock: nothing here needs a broker
    queue = _only_schedule_a_heartbeat(every_seconds=60)
    scheduler = SingleBeatScheduler(app=app)
    earlier = scheduler.schedule[queue]
    scheduler._schedule = scheduler.all_as_schedule()  # the schedule changed and was read again (new objects)

    sent = scheduler.reserve(earlier)  # the heap still held the earlier read's entry, and sent it

    current = scheduler._schedule[queue]
    assert current is not earlier and current.model is not sent.model
    assert (current.last_run_at, current.model.total_run_count) == (sent.last_run_at, 1), "the send was not counted"
    scheduler.sync()
    assert PeriodicTask.objects.get(name=queue).total_run_count == 1


@pytest.mark.django_db(transaction=True)
def test_a_heap_rebuilt_after_a_send_from_the_current_schedule_does_not_send_again(settings, tmp_path: Path) -> None:  # noqa: ANN001
    """The flaky double send of CI: a change noticed while the heap was being built marks the heap stale; the next
    tick rebuilds it from the current schedule, whose entry had just been sent (celery's ``next`` gives a new entry
    and advances only the shared model, not the entry's own ``last_run_at``)."""
    from churnsite.beat import SingleBeatScheduler
    from churnsite.celery import app

    settings.REDIS_URL = ""
    settings.CELERY_DIR = tmp_path  # a beat holding the checkout's var/celery/beat.lock would leave this one idle
    queue = _only_schedule_a_heartbeat(every_seconds=60)
    PeriodicTask.objects.filter(name=queue).update(last_run_at=timezone.now() - timedelta(minutes=2))  # due now
    scheduler = SingleBeatScheduler(app=app)
    sent: list[str] = []
    scheduler.apply_entry = lambda entry, producer=None: sent.append(entry.name)  # record instead of publishing
    try:
        scheduler.tick()  # reads the schedule, builds the heap and sends the due heartbeat
        assert sent == [queue]
        scheduler._heap_invalidated = True  # what DatabaseScheduler.schedule sets when it noticed a change mid-build
        scheduler.tick()
    finally:
        scheduler.close()  # writes the send back while the test database still exists
    assert sent == [queue], "the heartbeat was sent twice within its 60 s interval"
    assert PeriodicTask.objects.get(name=queue).total_run_count == 1


@pytest.mark.django_db(transaction=True)
def test_a_stop_signal_while_a_send_is_written_releases_the_lock_only_once_it_is_written(
    settings,  # noqa: ANN001
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A double send seen in the two-beats test on a loaded machine: beat's SIGTERM handler closes the scheduler and
    raises ``SystemExit``. Arriving while the write of the send just published was under way (the name popped from
    ``_dirty``, not yet saved), it released the lock with the send unwritten; the standby took over, reread the old
    ``last_run_at`` and sent the heartbeat again 41 ms later."""
    from django_celery_beat.schedulers import ModelEntry

    from churnsite.beat import SingleBeatScheduler
    from churnsite.celery import app

    settings.REDIS_URL = ""
    settings.CELERY_DIR = tmp_path
    queue = _only_schedule_a_heartbeat(every_seconds=60)
    PeriodicTask.objects.filter(name=queue).update(last_run_at=timezone.now() - timedelta(minutes=2))  # due now
    scheduler = SingleBeatScheduler(app=app)
    # Publishing is not under test; the write after it is what celery's apply_async does next (beat_sync_every = 1).
    scheduler.apply_entry = lambda entry, producer=None: scheduler._do_sync()
    written_at_release: list[int] = []
    release = scheduler._lock.release

    def release_recording_what_is_written() -> None:
        written_at_release.append(PeriodicTask.objects.get(name=queue).total_run_count)
        release()

    scheduler._lock.release = release_recording_what_is_written
    save = ModelEntry.save

    def save_interrupted_by_sigterm(entry: ModelEntry) -> None:
        monkeypatch.setattr(ModelEntry, "save", save)  # only this first write is interrupted
        scheduler.close()  # beat's SIGTERM handler: Service.sync closes the scheduler, then SystemExit
        raise SystemExit

    monkeypatch.setattr(ModelEntry, "save", save_interrupted_by_sigterm)
    with pytest.raises(SystemExit):
        scheduler.tick()
    scheduler.close()  # Service.start's finally, once the SystemExit has unwound the tick
    assert written_at_release and set(written_at_release) == {1}, (
        f"the lock was released with {written_at_release} sends written, not the 1 made: a standby would send again"
    )
    assert PeriodicTask.objects.get(name=queue).total_run_count == 1


def _start_beat(log_dir: Path, name: str, ttl: int = 30) -> tuple[subprocess.Popen[bytes], Path]:
    env = {
        **os.environ,
        "DATABASE_URL": worker_database_url(),
        "CELERY_TASK_ALWAYS_EAGER": "false",
        "CHURN_BEAT_LOCK_TTL": str(ttl),
    }
    log = log_dir / f"{name}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "churnsite", "beat", "-l", "INFO", "--pidfile="],
        cwd=PROJECT_ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    return process, log


def _terminate_standbys_first(beats: list[tuple[subprocess.Popen[bytes], Path]]) -> None:
    """Stop the beats, the leader last.

    A leader stopped gracefully releases the lock (``close``), and a standby still running takes it within its
    standby sleep: a second "the leader now" that is a handover, not two leaders at once. With the leader stopped
    last there is nobody left to hand over to, so every "the leader now" in the logs was written while another beat
    could still hold the lock.
    """
    # sorted reads every log before the first terminate; False (standby) sorts first
    for process, _ in sorted(beats, key=lambda beat: "the leader now" in beat[1].read_text(errors="replace")):
        process.terminate()
        process.wait(timeout=30)


def _only_schedule_a_heartbeat(*, every_seconds: int) -> str:
    """Disable every periodic task but one heartbeat sent to a fresh queue every few seconds; returns the queue."""
    queue = f"beat-test-{uuid.uuid4().hex[:8]}"
    PeriodicTask.objects.update(enabled=False)
    interval = IntervalSchedule.objects.create(every=every_seconds, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(
        name=queue,
        task="predictions.worker_heartbeat",
        interval=interval,
        queue=queue,
        kwargs=json.dumps({"queue": queue}),
    )
    return queue


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_two_beats_for_three_intervals_send_three_tasks_not_six(tmp_path: Path) -> None:
    queue = _only_schedule_a_heartbeat(every_seconds=3)
    broker = redis.Redis.from_url(settings.REDIS_URL)
    beats = [_start_beat(tmp_path, f"beat{i}") for i in range(2)]
    try:
        # Three sends, however late a loaded machine makes them (the sends of a fixed 7.5 s window were three only
        # while no send came over a second late); then no two sends may fall within one interval.
        deadline = time.monotonic() + 90
        while broker.llen(queue) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        _terminate_standbys_first(beats)
        sent = broker.llen(queue)
        broker.delete(queue)
    logs = "\n".join(log.read_text(errors="replace")[-1500:] for _, log in beats)
    sends = beat_send_times(*(log for _, log in beats), task=queue)
    gaps = [(later - earlier).total_seconds() for earlier, later in zip(sends, sends[1:], strict=False)]
    assert sent >= 3 and len(sends) == sent, f"{sent} tasks sent, {len(sends)} sends logged:\n{logs}"
    assert min(gaps) > 1.5, f"a task was sent twice within one interval of 3 s: gaps {gaps}\n{logs}"
    assert sum("the leader now" in log.read_text() for _, log in beats) == 1, logs


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_a_standby_beat_takes_over_from_a_killed_leader_without_sending_twice(tmp_path: Path) -> None:
    queue = _only_schedule_a_heartbeat(every_seconds=2)
    broker = redis.Redis.from_url(settings.REDIS_URL)
    beats = [_start_beat(tmp_path, f"beat{i}", ttl=4) for i in range(2)]
    try:
        deadline = time.monotonic() + 60
        while broker.llen(queue) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        leader = next(i for i, (_, log) in enumerate(beats) if "the leader now" in log.read_text())
        beats[leader][0].kill()  # SIGKILL: no chance to release the lock
        standby_log = beats[1 - leader][1]
        deadline = time.monotonic() + 30
        while standby_log.read_text().count("Sending due task") < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        for process, _ in beats:
            process.kill()
            process.wait(timeout=30)
        broker.delete(queue)
    sends = sorted(
        datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
        for _, log in beats
        for line in log.read_text().splitlines()
        if "Sending due task" in line
    )
    gaps = [(later - earlier).total_seconds() for earlier, later in zip(sends, sends[1:], strict=False)]
    assert standby_log.read_text().count("Sending due task") >= 2, standby_log.read_text()[-2000:]
    assert min(gaps) > 1.5, f"a task was sent twice within one interval: gaps {gaps}"
