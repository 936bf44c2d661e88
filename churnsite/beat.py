"""A Celery beat scheduler of which only one instance sends tasks, however many are started.

``SingleBeatScheduler`` is django-celery-beat's database scheduler behind a leader lock: every beat
process ticks, but only the holder of the lock sends due tasks; the others stand by and take over
within ``CHURN_BEAT_LOCK_TTL`` seconds when the leader dies. The lock is a Redis key (``SET NX PX`` with an
owner token, renewed at every tick) when Redis is the broker, and an ``flock`` on a file under
``CHURN_VAR_DIR`` with the embedded default (one machine). A new leader rereads the schedule from the
database first, so it never re-sends what the old leader sent (``beat_sync_every = 1`` writes each
``last_run_at`` as soon as the task is sent).
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import uuid
from pathlib import Path
from typing import IO, Protocol

from django.conf import settings
from django_celery_beat.schedulers import DatabaseScheduler

logger = logging.getLogger(__name__)

STANDBY_SLEEP_SECONDS = 2.0
REDIS_LOCK_KEY = "churnsite:beat-leader"

# Renew only while we still own the key, atomically.
_RENEW_SCRIPT = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""


class LeaderLock(Protocol):
    def acquire_or_renew(self) -> bool: ...

    def release(self) -> None: ...


class RedisLeaderLock:
    def __init__(self, url: str, *, key: str = REDIS_LOCK_KEY, ttl_seconds: int) -> None:
        import redis

        self._client = redis.Redis.from_url(url, socket_timeout=5)
        self._key = key
        self._ttl_ms = ttl_seconds * 1000
        self._token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"

    def acquire_or_renew(self) -> bool:
        if self._client.set(self._key, self._token, nx=True, px=self._ttl_ms):
            return True
        return bool(self._client.eval(_RENEW_SCRIPT, 1, self._key, self._token, self._ttl_ms))

    def release(self) -> None:
        self._client.eval(
            "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0",
            1,
            self._key,
            self._token,
        )


class FileLeaderLock:
    """An exclusive ``flock``; the kernel releases it when the process dies, so it never goes stale."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._file: IO[str] | None = None

    def acquire_or_renew(self) -> bool:
        if self._file is not None:
            return True
        self._path.parent.mkdir(parents=True, exist_ok=True)
        handle = self._path.open("a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._file = handle
        return True

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def leader_lock() -> LeaderLock:
    if settings.REDIS_URL:
        return RedisLeaderLock(settings.REDIS_URL, ttl_seconds=settings.CHURN_BEAT_LOCK_TTL)
    return FileLeaderLock(settings.CELERY_DIR / "beat.lock")


class SingleBeatScheduler(DatabaseScheduler):
    def __init__(self, *args: object, **kwargs: object) -> None:
        self._lock = leader_lock()
        self._leading = False
        self._stood_by = False
        self._busy = 0  # inside tick or sync: a close now comes from beat's SIGTERM/SIGINT handler interrupting them
        self._unsaved: set[str] = set()  # names sent whose last_run_at no sync has written yet
        super().__init__(*args, **kwargs)

    def tick(self, *args: object, **kwargs: object) -> float:
        self._busy += 1
        try:
            return self._tick(*args, **kwargs)
        finally:
            self._busy -= 1

    def _tick(self, *args: object, **kwargs: object) -> float:
        try:
            leading = self._lock.acquire_or_renew()
        except Exception:  # noqa: BLE001 - a broker hiccup must not make two leaders: stand by
            logger.exception("beat: cannot reach the leader lock; standing by")
            leading = False
        if leading and not self._leading:
            logger.info("beat: this process is the leader now")
            if self._stood_by:
                # Taking over: reread the schedule so entries carry the last_run_at the previous leader
                # wrote, and rebuild the heap from it (celery.beat.Scheduler rebuilds a heap that is None).
                self._schedule = self.all_as_schedule()
                self._heap = None
        elif not leading and self._leading:
            logger.warning("beat: lost the leader lock; standing by")
        self._leading = leading
        if not leading:
            self._stood_by = True
            return STANDBY_SLEEP_SECONDS
        return min(super().tick(*args, **kwargs), settings.CHURN_BEAT_LOCK_TTL / 3)

    def reserve(self, entry):  # noqa: ANN001, ANN201 - celery's ScheduleEntry in, its successor out
        """Record a send on the entry of the current schedule too.

        The heap may hold entries of an earlier read of the schedule (a change re-reads it; two beats starting
        together change it twice). The send then advanced only the heap's copy, and the next heap rebuilt from the
        current schedule found the task due again and sent it twice; the periodic save also wrote back the stale
        time. Even when the heap held the current entry, celery's ``next`` advances only the shared model and a
        new entry, so the current entry kept its old ``last_run_at``, and a heap rebuilt from it (a change
        noticed mid-build marks the heap stale) sent the task again at once. Copying the send's bookkeeping onto
        the current entry prevents all three.
        """
        sent = super().reserve(entry)
        current = self._schedule.get(sent.name) if self._schedule else None
        if current is not None and current is not sent:
            if current.model is not sent.model:
                for field in ("last_run_at", "total_run_count", "no_changes"):
                    setattr(current.model, field, getattr(sent.model, field))
            current.last_run_at = sent.last_run_at
            current.total_run_count = sent.total_run_count
        self._unsaved.add(sent.name)
        return sent

    def sync(self) -> None:
        """Write the sends, including one whose write a signal interrupted.

        ``DatabaseScheduler.sync`` pops a name from ``_dirty`` before saving it: a ``SystemExit`` raised by beat's
        SIGTERM handler during that save dropped the name, and the send was never written.
        """
        self._busy += 1
        try:
            self._dirty |= self._unsaved
            super().sync()
            self._unsaved &= self._dirty  # what is still dirty failed and is written at the next sync
        finally:
            self._busy -= 1

    def close(self) -> None:
        """Write the sends, then release the lock (a standby takes over at once and rereads them).

        Beat's SIGTERM/SIGINT handler closes the scheduler, then raises ``SystemExit``. When the signal interrupts a
        tick or a sync (a send published but its ``last_run_at`` not yet written), closing there released the lock
        before the send was written: a standby took over, reread the old ``last_run_at`` and sent the task again
        within its interval. Such a close does nothing; the ``SystemExit`` unwinds the tick, and beat closes the
        scheduler again once it has (``Service.start``'s ``finally``), when the write can finish before the release.
        It also keeps the handler off the database connection the interrupted code was using.
        """
        if self._busy:
            logger.info("beat: stopping; the schedule is written and the lock released once this tick unwinds")
            return
        super().close()
        if self._leading:
            self._lock.release()
