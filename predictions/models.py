from __future__ import annotations

from django.db import models


class WorkerHeartbeat(models.Model):
    """The last time a Celery worker proved it consumes a queue (written by a task it ran)."""

    hostname = models.CharField(max_length=255)
    queue = models.CharField(max_length=64)
    seen_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["hostname", "queue"], name="uniq_heartbeat_per_worker_queue")]
        ordering = ["-seen_at"]

    def __str__(self) -> str:
        return f"{self.hostname} on {self.queue} at {self.seen_at:%Y-%m-%d %H:%M:%S}"
