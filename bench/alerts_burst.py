"""Alert burst speed: one rule applied to N scores at once, through the real service, against a per-alert baseline.

    .venv/bin/python bench/alerts_burst.py [--customers 10000] [--cap 500]      # SQLite, in a scratch folder
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_alerts .venv/bin/python bench/alerts_burst.py

The PostgreSQL database named in DATABASE_URL is dropped and created again, so its name must start with
``bench``. Prints the time of ``alert_rule_apply`` for N scores (alerts, interventions, audit rows and the daily cap's
reservations, the send tasks only enqueued), then the time to send the capped emails through the file backend,
and, on a sample in the same run,
the ratio of a per-alert baseline (one transaction per alert taking the counter lock, as a naive dispatcher
would) to the service's batched dispatch for the same number of alerts.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from _scratch import without_services  # noqa: E402 - bench/ is on sys.path when a bench runs

AS_OF = datetime(2026, 3, 1, tzinfo=UTC)


def _prepare_database(scratch: Path) -> str:
    os.environ["CHURN_VAR_DIR"] = str(scratch)
    os.environ["REDIS_URL"] = os.environ["CHURN_CACHE_URL"] = ""  # eager Celery (blank: a .env cannot set it again)
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        without_services(os.environ)  # blank, so that a developer's .env cannot bring its database back
        return f"SQLite file in {scratch}"
    name = urlparse(url).path.lstrip("/")
    if not name.startswith("bench"):
        raise SystemExit(f"refusing to drop database {name!r}: the benchmark database name must start with 'bench'")
    import psycopg

    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    return f"PostgreSQL database {name}"


def _scores(count: int, prefix: str):  # noqa: ANN202
    from customers.models import Customer
    from predictions.models import ChurnScore, ModelVersion, ScoringRun

    Customer.objects.bulk_create(
        [Customer(external_id=f"{prefix}{i}", email=f"{prefix}{i}@example.com", marketing_consent=True)
         for i in range(count)],
        batch_size=2000,
    )  # fmt: skip
    version = ModelVersion.objects.create(name=f"bench-{prefix}", model_type="bench", status="ready")
    run = ScoringRun.objects.create(model_version=version, as_of=AS_OF, status="succeeded")
    ids = Customer.objects.filter(external_id__startswith=prefix).values_list("id", flat=True)
    ChurnScore.objects.bulk_create(
        [ChurnScore(customer_id=pk, model_version=version, scoring_run=run, as_of=AS_OF,
                    probability=0.5 + (pk % 500) / 1000, risk_tier="high") for pk in ids],
        batch_size=2000,
    )  # fmt: skip
    return ChurnScore.objects.filter(scoring_run=run)


def _baseline_per_alert(rule, scores) -> None:  # noqa: ANN001
    """One transaction per alert, each taking the counter lock: what a dispatcher without batching does."""
    from django.db import transaction
    from django.utils import timezone

    from alerts.models import Alert, AuditEntry, Intervention
    from alerts.services import _locked_counter, alert_period_start, coupon_code_new

    for score in scores.values("id", "customer_id", "probability", "risk_tier", "as_of"):
        with transaction.atomic():
            counter = _locked_counter(timezone.now().date())
            alert, created = Alert.objects.get_or_create(
                customer_id=score["customer_id"],
                rule=rule,
                period_start=alert_period_start(as_of=score["as_of"], period_days=rule.cooldown_days),
                defaults={
                    "as_of": score["as_of"],
                    "probability": score["probability"],
                    "risk_tier": score["risk_tier"],
                },
            )
            if not created:
                continue
            intervention = Intervention.objects.create(
                alert=alert, customer_id=score["customer_id"], kind="coupon_email", status="suppressed",
                reason="baseline", coupon_code=coupon_code_new(), idempotency_key=f"baseline-{alert.pk}",
            )  # fmt: skip
            AuditEntry.objects.create(actor="bench", action="alert_created", alert=alert, intervention=intervention)
            counter.save(update_fields=["reserved"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--cap", type=int, default=500)
    parser.add_argument("--sample", type=int, default=1000, help="alerts in the baseline comparison")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-alerts-"))
    where = _prepare_database(scratch)
    os.environ["DJANGO_SETTINGS_MODULE"] = "churnsite.settings"
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    settings.ALERTS_DAILY_SEND_CAP = args.cap
    call_command("migrate", verbosity=0)
    import logging

    logging.disable(logging.INFO)
    from alerts.models import AlertRule, Intervention
    from alerts.services import alert_rule_apply

    scores = _scores(args.customers, "burst")
    rule = AlertRule.objects.create(name="burst", trigger="probability", threshold=0.0, holdout_fraction=0.1)
    from churnsite.celery import app as celery_app

    celery_app.conf.task_always_eager = False  # enqueue only (filesystem broker): time the dispatch alone
    started = time.perf_counter()
    result = alert_rule_apply(rule=rule, scores=scores, actor="bench")
    burst = time.perf_counter() - started
    print(f"{where}: {result.alerts_created} alerts from one burst dispatched in {burst:.2f}s "
          f"({result.alerts_created / burst:,.0f} alerts/s), statuses {result.interventions}")  # fmt: skip
    from alerts.services import intervention_send_email

    pending = list(Intervention.objects.filter(status="pending").values_list("pk", flat=True))
    started = time.perf_counter()
    for pk in pending:
        intervention_send_email(intervention_id=pk)
    sending = time.perf_counter() - started
    sent = Intervention.objects.filter(status="sent").count()
    print(f"{sent} coupon emails sent through the file backend in {sending:.2f}s ({sent / sending:,.0f} emails/s)")

    sample_scores = _scores(args.sample, "base")
    baseline_rule = AlertRule.objects.create(name="baseline", trigger="probability", threshold=0.0)
    started = time.perf_counter()
    _baseline_per_alert(baseline_rule, sample_scores)
    baseline = time.perf_counter() - started
    batched_scores = _scores(args.sample, "batch")
    # The cap is used up by now, so both variants write suppressed coupon interventions and send nothing.
    batched_rule = AlertRule.objects.create(name="batched", trigger="probability", threshold=0.0, holdout_fraction=0)
    started = time.perf_counter()
    alert_rule_apply(rule=batched_rule, scores=batched_scores, actor="bench")
    batched = time.perf_counter() - started
    print(f"{args.sample} alerts: per-alert baseline {baseline:.2f}s, batched service {batched:.2f}s, "
          f"ratio {baseline / batched:.1f}x")  # fmt: skip


if __name__ == "__main__":
    main()
