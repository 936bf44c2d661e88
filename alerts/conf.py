"""Settings of the alerts app, each read from django.conf.settings with an embedded default.

ALERTS_DAILY_SEND_CAP          most retention emails reserved per local day (TIME_ZONE), all rules together (500)
ALERTS_CUSTOMER_COOLDOWN_DAYS  days after a coupon email during which a customer gets no other one (14)
ALERTS_SITE_URL                absolute base of the unsubscribe link in emails (http://127.0.0.1:8000)
ALERTS_SEND_MAX_RETRIES        retries of a transient SMTP or webhook error before failing (5)
ALERTS_RETRY_BACKOFF_SECONDS   first retry delay; doubles each retry, at most 10 minutes (30)
ALERTS_EAGER_RETRY_DELAY_CAP   longest pause before an in-process retry when Celery runs eagerly (2)
ALERTS_WEBHOOK_TIMEOUT         seconds a webhook endpoint may take to answer (10)
ALERTS_MAX_SCORE_AGE_DAYS      a scoring run whose as_of is more days before it ran is a backfill and raises no
                               alert (2; None applies the rules to every run)
ALERTS_TEST_SEND_DELAY         test-only: seconds a send pauses, holding its claim, before sending (0); also
                               read from the environment so a test can start a worker that pauses mid-send
ALERTS_TEST_SEND_DELAY_AFTER   test-only: seconds a send task pauses after the send is committed (0)
"""

from __future__ import annotations

import os

from django.conf import settings


def _number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw not in (None, ""):
        return float(raw)
    return float(getattr(settings, name, default))


def daily_send_cap() -> int:
    return int(getattr(settings, "ALERTS_DAILY_SEND_CAP", 500))


def customer_cooldown_days() -> int:
    return int(getattr(settings, "ALERTS_CUSTOMER_COOLDOWN_DAYS", 14))


def site_url() -> str:
    return str(getattr(settings, "ALERTS_SITE_URL", "http://127.0.0.1:8000")).rstrip("/")


def send_max_retries() -> int:
    return int(getattr(settings, "ALERTS_SEND_MAX_RETRIES", 5))


def retry_backoff_seconds() -> int:
    return int(getattr(settings, "ALERTS_RETRY_BACKOFF_SECONDS", 30))


def eager_retry_delay_cap() -> float:
    return float(getattr(settings, "ALERTS_EAGER_RETRY_DELAY_CAP", 2))


def max_score_age_days() -> float | None:
    value = getattr(settings, "ALERTS_MAX_SCORE_AGE_DAYS", 2)
    return None if value is None else float(value)


def webhook_timeout() -> float:
    return float(getattr(settings, "ALERTS_WEBHOOK_TIMEOUT", 10))


def test_send_delay() -> float:
    return _number("ALERTS_TEST_SEND_DELAY", 0)


def test_send_delay_after() -> float:
    return _number("ALERTS_TEST_SEND_DELAY_AFTER", 0)
