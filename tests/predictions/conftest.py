from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from customers.services import demo_store_generate
from predictions.models import TrainingRun
from predictions.services.training import training_run_request

STORE_END = datetime(2026, 6, 1, tzinfo=UTC)
FAST_TRAINING = {"inner_folds": 2, "max_training_cutoffs": 3}


@pytest.fixture
def store(settings, tmp_path: Path) -> None:  # noqa: ANN001
    """A small generated store (120 customers, 240 days up to STORE_END); artifacts and caches in tmp."""
    settings.CHURN_RESCORE_ON_PROMOTION = False  # tests start their scoring runs themselves
    settings.CHURN_ARTIFACT_DIR = tmp_path / "models"
    settings.CHURN_CACHE_DIR = tmp_path / "cache"
    demo_store_generate(customers=120, days=240, seed=3, end=STORE_END)


@pytest.fixture
def talkative_store(settings, tmp_path: Path) -> None:  # noqa: ANN001
    """The same store where some churners complain before leaving (``incident_churn``): text carries signal."""
    settings.CHURN_RESCORE_ON_PROMOTION = False
    settings.CHURN_ARTIFACT_DIR = tmp_path / "models"
    settings.CHURN_CACHE_DIR = tmp_path / "cache"
    demo_store_generate(customers=120, days=240, seed=3, end=STORE_END, incident_churn=True)


def train(**overrides: object) -> TrainingRun:
    """Train (eagerly) a fast features-only model at STORE_END; returns the run."""
    options = {"mode": "lightgbm", "horizon_days": 30, "as_of": STORE_END, "actor": "test", "options": FAST_TRAINING}
    return training_run_request(**(options | overrides))  # type: ignore[arg-type]
