"""Rows for alerts tests: customers, orders, a model version, scoring runs and scores."""

from __future__ import annotations

import smtplib
import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

from django.core.mail.backends.base import BaseEmailBackend
from django.utils import timezone

from customers.models import Customer, Order
from predictions.models import ChurnScore, ModelVersion, ScoringRun


def as_of(days: int = 0) -> datetime:
    return datetime(2026, 3, 10, 12, tzinfo=timezone.get_fixed_timezone(0)) + timedelta(days=days)


def customer_make(
    n: int,
    *,
    consent: bool = True,
    language: str = "en",
    name: str | None = None,
    segment: str = "",
    email: str | None = None,
) -> Customer:
    return Customer.objects.create(
        external_id=f"c{n}-{uuid.uuid4().hex[:6]}",
        name=name if name is not None else f"Customer {n}",
        email=email if email is not None else f"c{n}@example.com",
        language=language,
        segment=segment,
        marketing_consent=consent,
    )


def order_make(customer: Customer, *, amount: str, placed_at: datetime) -> Order:
    return Order.objects.create(
        external_id=f"o-{uuid.uuid4().hex}", customer=customer, placed_at=placed_at, amount=Decimal(amount)
    )


def model_version_make() -> ModelVersion:
    return ModelVersion.objects.create(name=f"test-{uuid.uuid4().hex[:8]}", model_type="logreg", status="ready")


def scoring_run_make(model_version: ModelVersion, *, at: datetime) -> ScoringRun:
    return ScoringRun.objects.create(model_version=model_version, as_of=at, status="succeeded")


def score_make(customer: Customer, run: ScoringRun, probability: float) -> ChurnScore:
    tier = "high" if probability >= 0.6 else "medium" if probability >= 0.3 else "low"
    return ChurnScore.objects.create(
        customer=customer,
        model_version=run.model_version,
        scoring_run=run,
        as_of=run.as_of,
        probability=probability,
        risk_tier=tier,
        top_factors=[{"factor": "days since last order", "direction": "up", "weight": 0.4, "evidence": "62 days"}],
    )


def sent_emails(folder: Path) -> list[str]:
    """Every message the file backend wrote (a file can hold several), as raw text."""
    if not folder.exists():
        return []
    separator = "-" * 79
    messages: list[str] = []
    for file in sorted(folder.iterdir()):
        messages.extend(part for part in file.read_text(errors="replace").split(separator) if part.strip())
    return messages


class ScriptedBackend(BaseEmailBackend):
    """A mail backend shaped like Django's SMTP one: ``open`` connects, ``send_messages`` opens if needed, hands the
    messages over and closes what it opened. Each step raises the next error queued for it (``open_errors``,
    ``errors`` for the hand-over, ``close_errors``); a message counts as delivered into ``outbox`` (class-level)
    when its hand-over raised nothing."""

    open_errors: list[BaseException] = []
    errors: list[BaseException] = []
    close_errors: list[BaseException] = []
    outbox: list[object] = []

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.connected = False

    def open(self) -> bool:
        if self.connected:
            return False
        if ScriptedBackend.open_errors:
            raise ScriptedBackend.open_errors.pop(0)
        self.connected = True
        return True

    def close(self) -> None:
        self.connected = False
        if ScriptedBackend.close_errors:
            raise ScriptedBackend.close_errors.pop(0)

    def send_messages(self, email_messages):  # noqa: ANN001, ANN201
        created = self.open()
        try:
            if ScriptedBackend.errors:
                raise ScriptedBackend.errors.pop(0)
            ScriptedBackend.outbox.extend(email_messages)
        finally:
            if created:
                self.close()
        return len(email_messages)

    @classmethod
    def reset(cls) -> None:
        cls.open_errors, cls.errors, cls.close_errors, cls.outbox = [], [], [], []


def transient_error() -> BaseException:
    return smtplib.SMTPServerDisconnected("connection unexpectedly closed")


def permanent_error() -> BaseException:
    return smtplib.SMTPRecipientsRefused({"x@example.com": (550, b"no such user")})
