"""Exactly once against the real PostgreSQL and Redis: concurrent sends, concurrent dispatches under the caps,
and a real worker killed (SIGKILL) mid-send whose redelivered task sends exactly one email in all."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psutil
import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.utils import timezone as django_timezone

from alerts import services as alerts_services
from alerts.models import ActionKind, Alert, AlertRule, Intervention, InterventionStatus, TriggerKind
from alerts.services import alert_rule_apply, alerts_apply_rules, intervention_send_email
from churnsite.celery import app as celery_app
from customers.models import Customer
from predictions.models import ChurnScore
from tests.alerts.helpers import as_of, customer_make, model_version_make, score_make, scoring_run_make, sent_emails
from tests.services import WorkerProcess, run_in_threads

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


def rule_make(name: str = "coupon", **fields: object) -> AlertRule:
    return AlertRule.objects.create(
        name=name, trigger=TriggerKind.PROBABILITY, threshold=0.5, action=ActionKind.COUPON_EMAIL, holdout_fraction=0,
        **fields,
    )  # fmt: skip


def purge_email_queue() -> None:
    with celery_app.connection_for_write() as conn:
        conn.default_channel.queue_purge("email")


def wait_for(condition: Callable[[], bool], *, timeout: float, what: str, log: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}:\n{log()}")


def test_concurrent_sends_of_one_intervention_send_one_email(settings) -> None:  # noqa: ANN001
    assert connection.vendor == "postgresql"
    settings.ALERTS_TEST_SEND_DELAY = 0.5  # every sender is inside its send at the same time
    run = scoring_run_make(model_version_make(), at=as_of())
    score_make(customer_make(1), run, 0.9)
    celery_app.conf.task_always_eager = False
    purge_email_queue()
    alert_rule_apply(rule=rule_make(), scores=ChurnScore.objects.all(), actor="test")  # enqueued, nobody consumes
    purge_email_queue()
    intervention = Intervention.objects.get()

    results = run_in_threads(4, lambda _: intervention_send_email(intervention_id=intervention.pk))

    assert results == ["sent"] * 4, results
    assert len(sent_emails(django_settings.EMAIL_FILE_PATH)) == 1
    assert Intervention.objects.get().attempts == 1


def test_concurrent_dispatches_keep_the_daily_cap_and_the_cooldown(settings) -> None:  # noqa: ANN001
    settings.ALERTS_DAILY_SEND_CAP = 30
    celery_app.conf.task_always_eager = True
    Customer.objects.bulk_create(
        [Customer(external_id=f"b{i}", email=f"b{i}@example.com", marketing_consent=True) for i in range(1000)]
    )
    run = scoring_run_make(model_version_make(), at=as_of())
    ChurnScore.objects.bulk_create(
        [
            ChurnScore(customer_id=pk, model_version=run.model_version, scoring_run=run, as_of=run.as_of,
                       probability=0.9, risk_tier="high")
            for pk in Customer.objects.values_list("id", flat=True)
        ]
    )  # fmt: skip
    for i in range(4):
        rule_make(name=f"rule {i}")

    results = run_in_threads(4, lambda i: alerts_apply_rules(actor=f"thread-{i}", rule_name=f"rule {i}"))

    assert all(isinstance(r, list) for r in results), results
    contacted = list(Intervention.objects.filter(status__in=("pending", "sent")).values_list("customer_id", flat=True))
    assert len(contacted) == 30 and len(set(contacted)) == 30
    assert len(sent_emails(django_settings.EMAIL_FILE_PATH)) == 30


class _ThreadClock:
    """``django.utils.timezone`` with a ``now()`` and ``localdate()`` of each thread's own (Django's own
    ``localdate()`` reads its own ``now()``: without this one both threads locked the same day's counter)."""

    def __init__(self) -> None:
        self.local = threading.local()

    def now(self) -> datetime:
        return getattr(self.local, "now", None) or django_timezone.now()

    def localdate(self, value: datetime | None = None, timezone: object = None) -> date:
        return django_timezone.localdate(value or self.now(), timezone)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> object:
        return getattr(django_timezone, name)


def _slowed(monkeypatch: pytest.MonkeyPatch, clock: _ThreadClock, name: str) -> None:
    """``alerts.services.<name>`` sleeps after it ran in the thread marked slow, still holding its locks."""
    real = getattr(alerts_services, name)

    def slow(**kwargs: object) -> object:
        result = real(**kwargs)
        if getattr(clock.local, "slow", False):
            time.sleep(1.5)
        return result

    monkeypatch.setattr(alerts_services, name, slow)


def _either_side_of_midnight(clock: _ThreadClock, index: int) -> None:
    """Thread 0 at 23:59:59.8 (UTC, the site's zone here), thread 1 0.4 s later, on the next day."""
    today = django_timezone.now().date()
    before_midnight = datetime(today.year, today.month, today.day, 23, 59, 59, 800000, tzinfo=UTC)
    clock.local.now = before_midnight + timedelta(seconds=0.4 * index)
    clock.local.slow = index == 0
    time.sleep(0.4 * index)


def test_one_rule_applied_twice_on_either_side_of_midnight_alerts_once(monkeypatch, settings) -> None:  # noqa: ANN001
    # The after-scoring task and churn_alerts apply the same rule at once. Each held its own day's counter, both
    # found no alert yet, and the second died on the one-alert-per-period constraint.
    assert connection.vendor == "postgresql"
    settings.TIME_ZONE = "UTC"
    celery_app.conf.task_always_eager = True
    run = scoring_run_make(model_version_make(), at=as_of())
    score_make(customer_make(1), run, 0.9)
    AlertRule.objects.create(
        name="A", trigger=TriggerKind.PROBABILITY, threshold=0.5, action=ActionKind.NONE, holdout_fraction=0
    )
    clock = _ThreadClock()
    monkeypatch.setattr(alerts_services, "timezone", clock)
    _slowed(monkeypatch, clock, "holdout_assigned")  # after the existing alerts were read, before the insert

    def apply(index: int) -> object:
        _either_side_of_midnight(clock, index)
        return alerts_services.alerts_apply_rules(actor=f"t{index}", scoring_run_id=run.pk)

    results = run_in_threads(2, apply)

    assert not any(isinstance(r, Exception) for r in results), results
    assert Alert.objects.count() == 1


def _alerted_customer(settings, *rule_names: str) -> Customer:  # noqa: ANN001
    """On PostgreSQL, with the site's zone UTC and eager tasks: one scored customer alerted by an alert-only rule of
    each name."""
    assert connection.vendor == "postgresql"
    settings.TIME_ZONE = "UTC"
    celery_app.conf.task_always_eager = True
    run = scoring_run_make(model_version_make(), at=as_of())
    customer = customer_make(1)
    score_make(customer, run, 0.9)
    for name in rule_names:
        rule = AlertRule.objects.create(
            name=name, trigger=TriggerKind.PROBABILITY, threshold=0.5, action=ActionKind.NONE, holdout_fraction=0
        )
        alert_rule_apply(rule=rule, scores=ChurnScore.objects.all(), actor="test")
    return customer


def test_two_coupon_clicks_on_one_customers_page_on_either_side_of_midnight_send_one(monkeypatch, settings) -> None:  # noqa: ANN001
    # Two staff members (no shared Idempotency-Key): the second read the alert's interventions before it waited
    # for the customer's lock, then inserted a second coupon for the same alert and died on the constraint.
    customer = _alerted_customer(settings, "A")
    clock = _ThreadClock()
    monkeypatch.setattr(alerts_services, "timezone", clock)
    _slowed(monkeypatch, clock, "_dispatch_locked")

    def click(index: int) -> object:
        _either_side_of_midnight(clock, index)
        return alerts_services.customer_send_coupon(customer=customer, actor=f"user:{index}").status

    results = run_in_threads(2, click)

    assert not any(isinstance(r, Exception) for r in results), results
    assert Intervention.objects.count() == 1
    assert len(sent_emails(django_settings.EMAIL_FILE_PATH)) == 1


def test_an_alerts_coupon_and_the_customer_pages_coupon_across_midnight_do_not_deadlock(monkeypatch, settings) -> None:  # noqa: ANN001
    # The alert's button locked the alert, then the customer; the customer page's button locks the customer, then
    # inserts its coupon for the same alert (which waits for the alert's lock). Across midnight the day counters
    # differ, so the two waited for each other and PostgreSQL broke the deadlock by failing one.
    customer = _alerted_customer(settings, "A")
    alert = Alert.objects.get()
    clock = _ThreadClock()
    monkeypatch.setattr(alerts_services, "timezone", clock)
    real_dispatch = alerts_services._dispatch_locked

    def dispatch_later(**kwargs: object) -> object:
        if getattr(clock.local, "slow", False):
            time.sleep(1.5)  # the alert's button: its locks taken so far held, the customer's not yet
        return real_dispatch(**kwargs)

    monkeypatch.setattr(alerts_services, "_dispatch_locked", dispatch_later)

    def click(index: int) -> object:
        _either_side_of_midnight(clock, index)
        if index == 0:
            return alerts_services.alert_send_coupon(alert=alert, actor="user:ann").status
        return alerts_services.customer_send_coupon(customer=customer, actor="user:bob").status

    results = run_in_threads(2, click)

    assert not any(isinstance(r, Exception) for r in results), results
    assert Intervention.objects.count() == 1
    assert len(sent_emails(django_settings.EMAIL_FILE_PATH)) == 1


def test_two_dispatches_on_either_side_of_midnight_contact_a_customer_once(monkeypatch, settings) -> None:  # noqa: ANN001
    # Each dispatch locks its own day's send counter; the customer's row must serialise them all the same.
    _alerted_customer(settings, "A", "B")  # two alert-only rules: one alert each for the same customer
    first, second = Alert.objects.order_by("rule__name")
    clock = _ThreadClock()
    monkeypatch.setattr(alerts_services, "timezone", clock)
    _slowed(monkeypatch, clock, "_dispatch_locked")

    def send(index: int) -> object:
        _either_side_of_midnight(clock, index)
        return alerts_services.alert_send_coupon(alert=(first, second)[index], actor="user:ann").status

    results = run_in_threads(2, send)

    assert not any(isinstance(r, Exception) for r in results), results
    statuses = sorted(Intervention.objects.values_list("status", flat=True))
    assert statuses == ["sent", "suppressed"], statuses
    assert len(sent_emails(django_settings.EMAIL_FILE_PATH)) == 1


@pytest.fixture
def dispatched(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], tuple[WorkerProcess, int, Path]]]:
    """Start a real worker on the email queue with the given env, then dispatch one coupon email to it."""
    workers: list[WorkerProcess] = []
    purge_email_queue()

    def start(extra_env: dict[str, str]) -> tuple[WorkerProcess, int, Path]:
        var = tmp_path / "var"
        worker = WorkerProcess(
            queues=["email"],
            log_dir=tmp_path,
            extra_env={
                "CHURN_VAR_DIR": str(var),
                "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
                **extra_env,
            },
        )
        workers.append(worker)
        worker.wait_ready()
        run = scoring_run_make(model_version_make(), at=as_of())
        score_make(customer_make(1), run, 0.9)
        alert_rule_apply(rule=rule_make(), scores=ChurnScore.objects.all(), actor="test")  # commits, then enqueues
        return worker, Intervention.objects.get().pk, var / "emails"

    yield start
    for worker in workers:
        worker.stop()
    purge_email_queue()


def kill_pool_child(worker: WorkerProcess) -> int:
    (child,) = psutil.Process(worker.process.pid).children()
    child.send_signal(signal.SIGKILL)
    return child.pid


def test_worker_killed_mid_send_is_redelivered_and_sends_exactly_once(dispatched) -> None:  # noqa: ANN001
    worker, intervention_id, emails = dispatched({"ALERTS_TEST_SEND_DELAY": "4"})
    claimed = f"intervention {intervention_id} claimed"
    wait_for(lambda: claimed in worker.log(), timeout=60, what="the send to start", log=worker.log)

    kill_pool_child(worker)  # holding the claim, before the email left
    wait_for(
        lambda: Intervention.objects.get(pk=intervention_id).status == InterventionStatus.SENT,
        timeout=90,
        what="the redelivered task to send",
        log=worker.log,
    )

    assert worker.log().count(claimed) == 2, "claimed by the killed delivery and by the redelivery"
    assert len(sent_emails(emails)) == 1, worker.log()


def test_worker_killed_after_sending_is_redelivered_and_sends_nothing_more(dispatched) -> None:  # noqa: ANN001
    worker, intervention_id, emails = dispatched({"ALERTS_TEST_SEND_DELAY_AFTER": "4"})
    wait_for(
        lambda: f"intervention {intervention_id} sent" in worker.log(), timeout=60, what="the send", log=worker.log
    )

    kill_pool_child(worker)  # sent and committed, not yet acknowledged
    wait_for(
        lambda: f"intervention {intervention_id} already sent" in worker.log(),
        timeout=90,
        what="the redelivered task",
        log=worker.log,
    )

    assert len(sent_emails(emails)) == 1, worker.log()
    assert Intervention.objects.get(pk=intervention_id).attempts == 1


def test_concurrent_posts_with_one_idempotency_key_create_one_rule() -> None:
    from django.contrib.auth import get_user_model
    from rest_framework.test import APIClient

    from tests.staff import grant_app_permissions

    staff = grant_app_permissions(get_user_model().objects.create_user("ann", password="pw-for-tests", is_staff=True))
    body = {"name": "from many clients", "trigger": "probability", "threshold": 0.7, "action": "none"}

    def post(_: int) -> tuple[int, object]:
        client = APIClient()
        client.force_authenticate(staff)
        response = client.post("/api/v1/alert-rules/", body, format="json", HTTP_IDEMPOTENCY_KEY="same-key")
        return response.status_code, response.json()

    results = run_in_threads(4, post)

    assert all(isinstance(r, tuple) and r[0] == 201 for r in results), results
    assert len({r[1]["id"] for r in results}) == 1
    assert AlertRule.objects.filter(name="from many clients").count() == 1


def sweep_unacked(visibility_timeout: int = 20) -> bool:
    """Run the Redis transport's restore of unacknowledged messages older than the visibility timeout now.

    Workers run this sweep themselves, but throttled to about every 100 s; the test triggers the same sweep
    (the real one, against the real broker) so it waits about 20 s instead. Returns False to keep polling."""
    from kombu import Connection

    with Connection(
        django_settings.CELERY_BROKER_URL, transport_options={"visibility_timeout": visibility_timeout}
    ) as conn:
        conn.default_channel.qos.restore_visible(num=100, interval=1)
    return False


def test_whole_worker_killed_mid_send_another_worker_sends_exactly_once(dispatched, tmp_path: Path) -> None:  # noqa: ANN001
    # A visibility timeout of 20 s (twice CHURN_TRAIN_TIME_LIMIT) so the broker redelivers to the next worker soon.
    short_visibility = {"ALERTS_TEST_SEND_DELAY": "4", "CHURN_TRAIN_TIME_LIMIT": "10"}
    worker, intervention_id, emails = dispatched(short_visibility)
    claimed = f"intervention {intervention_id} claimed"
    wait_for(lambda: claimed in worker.log(), timeout=60, what="the send to start", log=worker.log)

    main = psutil.Process(worker.process.pid)
    for process in [*main.children(recursive=True), main]:
        process.send_signal(signal.SIGKILL)
    worker.process.wait()
    successor = WorkerProcess(
        queues=["email"],
        log_dir=tmp_path,
        extra_env={
            "CHURN_VAR_DIR": str(emails.parent),
            "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
            **short_visibility,
        },
    )
    try:
        successor.wait_ready()
        wait_for(
            lambda: sweep_unacked() or Intervention.objects.get(pk=intervention_id).status == InterventionStatus.SENT,
            timeout=120,
            what="the next worker to get the task again and send",
            log=successor.log,
        )
        assert claimed in successor.log()
    finally:
        successor.stop()
    assert len(sent_emails(emails)) == 1, successor.log()
