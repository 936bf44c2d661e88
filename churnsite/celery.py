"""The Celery application: queues, routes and the beat schedule.

Queues: ``gpu`` (training and encoding, one task at a time per GPU worker), ``default``
(scoring orchestration, drift, housekeeping) and ``email`` (retention actions).
"""

from __future__ import annotations

import os

from celery import Celery
from kombu import Exchange, Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "churnsite.settings")

app = Celery("churnsite")
app.config_from_object("django.conf:settings", namespace="CELERY")

QUEUE_NAMES = ("default", "gpu", "email")

app.conf.task_queues = tuple(Queue(name, Exchange(name), routing_key=name) for name in QUEUE_NAMES)
app.conf.task_default_queue = "default"
app.conf.task_default_exchange = "default"
app.conf.task_default_routing_key = "default"
# Tasks also name their queue in their decorator; the routes keep the mapping in one place
# for tasks sent by name (beat, other services).
app.conf.task_routes = {
    "predictions.train_*": {"queue": "gpu"},
    "predictions.encode_*": {"queue": "gpu"},
    "predictions.score_chunk": {"queue": "gpu"},
    "alerts.send_*": {"queue": "email"},
    "alerts.deliver_*": {"queue": "email"},
    "*": {"queue": "default"},
}

app.autodiscover_tasks()
