"""Tiny synthetic customer histories for ChurnModel tests: churners stop ordering and complain first."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from ml.data import CustomerHistory, CustomerRecord, MessageRecord, OrderRecord

START = datetime(2024, 1, 1, tzinfo=UTC)
ANGRY = ("The parcel is late again. I want a refund and I am leaving.", "Worst service ever. Please cancel my account.")
HAPPY = ("Thanks, the delivery was fast. Great product!", "I love the new colour. Will buy again.")


def churn_histories(n: int = 120, *, seed: int = 0, days: int = 300) -> list[CustomerHistory]:
    """``n`` customers over ``days`` days from :data:`START`; about 40% stop ordering at a random day."""
    rng = random.Random(seed)
    histories = []
    for i in range(n):
        leaves = rng.random() < 0.4
        stop = rng.uniform(60, days) if leaves else days + 1
        orders, messages = [], []
        day = rng.uniform(0, 20)
        while day < min(stop, days):
            orders.append(OrderRecord(placed_at=START + timedelta(days=day), amount=round(rng.uniform(10, 200), 2)))
            day += rng.expovariate(1 / 15)
        for m in range(rng.randint(1, 3)):
            at = rng.uniform(0, min(stop, days))
            text = rng.choice(ANGRY if leaves and at > stop - 60 else HAPPY)
            messages.append(MessageRecord(sent_at=START + timedelta(days=at), text=text, conversation_id=f"c{i}-{m}"))
        customer = CustomerRecord(
            id=f"cust-{i}", signed_up_at=START, segment=rng.choice(["gold", "basic"]), country="DE", language="en"
        )
        histories.append(CustomerHistory(customer=customer, orders=tuple(orders), messages=tuple(messages)))
    return histories
