"""Writes of the customers app."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from customers.models import Customer


@transaction.atomic
def customer_opt_out(*, customer: Customer, at: datetime | None = None) -> Customer:
    """Record that the customer opted out of marketing. An opt-out always wins over consent.

    Idempotent: the first opt-out time is kept, so a repeated opt-out does not move it.
    """
    locked = Customer.objects.select_for_update().get(pk=customer.pk)
    if locked.opted_out_at is None:
        locked.opted_out_at = at or timezone.now()
        locked.save(update_fields=["opted_out_at", "updated_at"])
    customer.opted_out_at = locked.opted_out_at
    return locked
