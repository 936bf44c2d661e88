"""The demo-store simulator: a realistic, seeded e-commerce history with a hidden churn mechanism."""

from __future__ import annotations

from customers.generator.simulator import (
    ID_PREFIX,
    SUPPORTED_LANGUAGES,
    CustomerRecord,
    CustomerTruth,
    EventRecord,
    MessageRecord,
    OrderRecord,
    StoreBlock,
    StoreOptions,
    default_end,
    simulate_store,
)

__all__ = [
    "ID_PREFIX",
    "SUPPORTED_LANGUAGES",
    "CustomerRecord",
    "CustomerTruth",
    "EventRecord",
    "MessageRecord",
    "OrderRecord",
    "StoreBlock",
    "StoreOptions",
    "default_end",
    "simulate_store",
]
