from __future__ import annotations

import pytest

from predictions.models import TaskDelivery
from predictions.services import task_delivery_begin

pytestmark = pytest.mark.django_db


def test_a_task_redelivered_past_the_cap_is_parked_and_stays_parked() -> None:
    starts = [task_delivery_begin(task_name="predictions.score_chunk", key="run-1:0", max_attempts=3) for _ in range(5)]
    assert starts == [True, True, True, False, False]
    delivery = TaskDelivery.objects.get(key="run-1:0")
    assert delivery.parked_at is not None and delivery.attempts == 4


def test_keys_are_counted_separately() -> None:
    assert task_delivery_begin(task_name="t", key="a", max_attempts=1)
    assert task_delivery_begin(task_name="t", key="b", max_attempts=1)
    assert not task_delivery_begin(task_name="t", key="a", max_attempts=1)
