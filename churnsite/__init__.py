"""churnsite: settings, URLs and the Celery application of the churn early-warning system."""

from __future__ import annotations

from churnsite.celery import app as celery_app

__all__ = ["celery_app"]
