"""Rules turn scores into alerts once per period; interventions are sent once, to consenting customers only,
within the caps; holdout, outcomes, audit and the treated-customer selector."""

from __future__ import annotations

import re
import smtplib
import socket
import ssl
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings as django_settings
from django.utils import timezone

from alerts.models import (
    ActionKind,
    Alert,
    AlertRule,
    AlertStatus,
    AuditEntry,
    DailySendCounter,
    Intervention,
    InterventionStatus,
    TriggerKind,
)
from alerts.selectors import alert_rule_uplift, alert_rules_uplift, treated_customer_ids
from alerts.services import (
    AlertTransitionError,
    TransientSendError,
    alert_rule_apply,
    alert_rule_ensure_example,
    alert_transition,
    alerts_apply_rules,
    coupon_code_new,
    customer_send_coupon,
    holdout_assigned,
    intervention_outcomes_record,
    intervention_send_email,
    unsubscribe_customer,
    unsubscribe_token,
)
from alerts.tasks import alerts_after_scoring_task, send_coupon_email_task
from customers.services import customer_opt_out
from predictions.models import ChurnScore
from tests.alerts.helpers import (
    ScriptedBackend,
    as_of,
    customer_make,
    model_version_make,
    order_make,
    permanent_error,
    score_make,
    scoring_run_make,
    sent_emails,
    transient_error,
)

pytestmark = pytest.mark.django_db


def rule_make(**fields: object) -> AlertRule:
    defaults: dict[str, object] = {
        "name": "test rule",
        "trigger": TriggerKind.PROBABILITY,
        "threshold": 0.5,
        "action": ActionKind.COUPON_EMAIL,
        "holdout_fraction": 0.0,
        "cooldown_days": 7,
    }
    defaults.update(fields)
    return AlertRule.objects.create(**defaults)


@pytest.fixture
def run():  # noqa: ANN201
    return scoring_run_make(model_version_make(), at=as_of())


def emails() -> list[str]:
    return sent_emails(django_settings.EMAIL_FILE_PATH)


def test_top_percent_trigger_alerts_the_highest_expected_loss(run) -> None:  # noqa: ANN001
    # Expected loss = probability x value: a rich customer at 0.5 outranks a poor one at 0.9.
    rich, poor, *rest = [customer_make(i) for i in range(20)]
    order_make(rich, amount="1000", placed_at=as_of(-30))
    order_make(poor, amount="10", placed_at=as_of(-30))
    score_make(rich, run, 0.5)
    score_make(poor, run, 0.9)
    for i, customer in enumerate(rest):
        order_make(customer, amount="100", placed_at=as_of(-30))
        score_make(customer, run, 0.1 + i * 0.01)
    order_make(rest[-1], amount="400", placed_at=as_of(+5))  # after as_of: not part of the value
    rule = rule_make(trigger=TriggerKind.TOP_PERCENT, top_percent=10, action=ActionKind.NONE)

    result = alert_rule_apply(rule=rule, scores=ChurnScore.objects.all(), actor="test")

    alerted = set(Alert.objects.values_list("customer_id", flat=True))
    assert result.alerts_created == 2
    assert alerted == {rich.pk, rest[-1].pk}, "top 10% of 20 by expected loss: 500 and 28"
    assert Alert.objects.get(customer=rich).expected_loss == Decimal("500.00")


def test_a_rule_valuing_customers_by_an_attribute_ranks_and_filters_profile_customers_by_it(run) -> None:  # noqa: ANN001
    # Profile data (a bank, a telecom) has no orders: the value is an attribute, as imported (numbers, numeric text).
    values = [29.85, "118.75", 70, None, "N/A", True, -5, 1e20]
    customers = []
    for i, value in enumerate(values):
        customer = customer_make(i)
        customer.attributes = {} if value is None else {"MonthlyCharges": value}
        customer.save(update_fields=["attributes"])
        score_make(customer, run, 0.5)
        customers.append(customer)
    order_make(customers[3], amount="1000", placed_at=as_of(-30))  # orders do not count for such a rule
    rule = rule_make(
        trigger=TriggerKind.TOP_N,
        top_n=4,
        action=ActionKind.NONE,
        value_attribute="MonthlyCharges",
        min_customer_value=1,
    )

    alert_rule_apply(rule=rule, scores=ChurnScore.objects.all(), actor="test")

    alerted = {a.customer_id: (a.customer_value, a.expected_loss) for a in Alert.objects.all()}
    assert alerted == {
        customers[7].pk: (Decimal("999999999999.99"), Decimal("500000000000.00")),  # the column's largest value
        customers[1].pk: (Decimal("118.75"), Decimal("59.38")),
        customers[2].pk: (Decimal("70.00"), Decimal("35.00")),
        customers[0].pk: (Decimal("29.85"), Decimal("14.92")),  # 14.925, to the even cent
    }, "missing, text, boolean and negative values are 0, under min_customer_value 1"


def test_a_rule_without_a_value_attribute_still_values_customers_by_their_orders(run) -> None:  # noqa: ANN001
    customer = customer_make(1)
    customer.attributes = {"MonthlyCharges": 50}
    customer.save(update_fields=["attributes"])
    order_make(customer, amount="200", placed_at=as_of(-30))
    score_make(customer, run, 0.5)

    alert_rule_apply(rule=rule_make(action=ActionKind.NONE), scores=ChurnScore.objects.all(), actor="test")

    assert Alert.objects.get().customer_value == Decimal("200.00")


def test_probability_trigger_uses_per_segment_thresholds(run) -> None:  # noqa: ANN001
    vip = customer_make(1, segment="vip")
    regular = customer_make(2, segment="regular")
    score_make(vip, run, 0.45)
    score_make(regular, run, 0.55)
    rule = rule_make(threshold=0.6, segment_thresholds={"vip": 0.4}, action=ActionKind.NONE)

    alert_rule_apply(rule=rule, scores=ChurnScore.objects.all(), actor="test")

    assert list(Alert.objects.values_list("customer_id", flat=True)) == [vip.pk]


def test_filters_segment_attributes_and_value(run) -> None:  # noqa: ANN001
    keep = customer_make(1, segment="web")
    keep.attributes = {"plan": "gold"}
    keep.save()
    wrong_plan = customer_make(2, segment="web")
    wrong_segment = customer_make(3, segment="store")
    for customer in (keep, wrong_plan, wrong_segment):
        order_make(customer, amount="200", placed_at=as_of(-10))
        score_make(customer, run, 0.9)
    poor = customer_make(4, segment="web")
    poor.attributes = {"plan": "gold"}
    poor.save()
    score_make(poor, run, 0.9)
    rule = rule_make(
        segments=["web"], attribute_filters={"plan": "gold"}, min_customer_value=Decimal("50"), action=ActionKind.NONE
    )

    result = alert_rule_apply(rule=rule, scores=ChurnScore.objects.all(), actor="test")

    assert result.eligible == 1
    assert list(Alert.objects.values_list("customer_id", flat=True)) == [keep.pk]


def test_many_scoring_runs_in_one_period_give_one_alert_and_one_email(
    django_capture_on_commit_callbacks,  # noqa: ANN001
) -> None:
    customer = customer_make(1)
    model_version = model_version_make()
    rule = rule_make()
    for hours in (0, 6, 30):
        run = scoring_run_make(model_version, at=as_of() + timedelta(hours=hours))
        score_make(customer, run, 0.8)
        with django_capture_on_commit_callbacks(execute=True):
            alerts_apply_rules(scoring_run_id=run.pk, actor="test")

    assert Alert.objects.filter(customer=customer, rule=rule).count() == 1
    assert Intervention.objects.filter(customer=customer).count() == 1
    assert len(emails()) == 1


def test_a_backfill_scoring_run_raises_no_alert_and_a_current_one_does(
    settings,  # noqa: ANN001
    django_capture_on_commit_callbacks,  # noqa: ANN001
) -> None:
    from alerts.models import AuditEntry
    from predictions.models import ScoringRun

    settings.ALERTS_MAX_SCORE_AGE_DAYS = 2
    customer = customer_make(1)
    model_version = model_version_make()
    rule = rule_make()
    backfill = scoring_run_make(model_version, at=as_of())  # a past date, scored now
    score_make(customer, backfill, 0.9)
    with django_capture_on_commit_callbacks(execute=True):
        assert alerts_apply_rules(scoring_run_id=backfill.pk, actor="test") == []
    assert not Alert.objects.exists() and not emails()
    assert AuditEntry.objects.filter(action="rules_not_applied").count() == 1

    current = scoring_run_make(model_version, at=as_of(+1))
    ScoringRun.objects.filter(pk=current.pk).update(created_at=as_of(+1) + timedelta(hours=3))  # scored that day
    score_make(customer, current, 0.9)
    with django_capture_on_commit_callbacks(execute=True):
        (applied,) = alerts_apply_rules(scoring_run_id=current.pk, actor="test")
    assert applied.alerts_created == 1 and Alert.objects.get().rule == rule and len(emails()) == 1


def test_rules_applied_to_latest_scores_leave_out_scores_older_than_the_max_age(settings) -> None:  # noqa: ANN001
    from django.utils import timezone

    settings.ALERTS_MAX_SCORE_AGE_DAYS = 2
    model_version = model_version_make()
    rule = rule_make(action=ActionKind.NONE)
    old, fresh = customer_make(1), customer_make(2)
    score_make(old, scoring_run_make(model_version, at=timezone.now() - timedelta(days=30)), 0.9)
    score_make(fresh, scoring_run_make(model_version, at=timezone.now() - timedelta(hours=5)), 0.9)
    (applied,) = alerts_apply_rules(actor="test")
    assert applied.alerts_created == 1 and list(Alert.objects.values_list("customer_id", flat=True)) == [fresh.pk]
    assert rule.alerts.count() == 1


def test_coupon_email_has_escaped_name_offer_code_and_unsubscribe_link(
    run,
    django_capture_on_commit_callbacks,  # noqa: ANN001
) -> None:
    customer = customer_make(1, name="Ann <b>Lee</b>")
    score_make(customer, run, 0.9)
    rule = rule_make(coupon_discount_percent=20)

    with django_capture_on_commit_callbacks(execute=True):
        alert_rule_apply(rule=rule, scores=ChurnScore.objects.all(), actor="test")

    intervention = Intervention.objects.get()
    (raw,) = emails()
    assert intervention.status == InterventionStatus.SENT and intervention.sent_at is not None
    assert intervention.coupon_code in raw and "20% off" in raw
    assert "Ann &lt;b&gt;Lee&lt;/b&gt;" in raw and "Ann <b>Lee</b>" in raw, "escaped in HTML, plain in text"
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in raw
    assert f"/unsubscribe/{unsubscribe_token(customer_id=customer.pk)}/" in raw
    assert Alert.objects.get().status == AlertStatus.ACTIONED


def test_chinese_customers_get_the_chinese_email(run, django_capture_on_commit_callbacks) -> None:  # noqa: ANN001
    customer = customer_make(1, language="zh", name="王芳")
    score_make(customer, run, 0.9)

    with django_capture_on_commit_callbacks(execute=True):
        alert_rule_apply(rule=rule_make(), scores=ChurnScore.objects.all(), actor="test")

    (raw,) = emails()
    assert "优惠码" in raw and "王芳，您好" in raw and "一键退订" in raw, raw


def test_redelivered_send_task_sends_one_email(run, django_capture_on_commit_callbacks) -> None:  # noqa: ANN001
    score_make(customer_make(1), run, 0.9)
    with django_capture_on_commit_callbacks(execute=False):  # enqueued, not run yet
        alert_rule_apply(rule=rule_make(), scores=ChurnScore.objects.all(), actor="test")
    intervention = Intervention.objects.get()

    first = send_coupon_email_task.apply(args=[intervention.pk]).get()
    second = send_coupon_email_task.apply(args=[intervention.pk]).get()

    assert (first, second) == ("sent", "sent")
    assert len(emails()) == 1


def test_opted_out_customer_gets_nothing_even_when_opting_out_after_dispatch(
    run,
    django_capture_on_commit_callbacks,  # noqa: ANN001
) -> None:
    early, late, never = customer_make(1), customer_make(2), customer_make(3, consent=False)
    customer_opt_out(customer=early)
    for customer in (early, late, never):
        score_make(customer, run, 0.9)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        alert_rule_apply(rule=rule_make(), scores=ChurnScore.objects.all(), actor="test")
    unsubscribe_customer(token=unsubscribe_token(customer_id=late.pk))  # between dispatch and send
    for callback in callbacks:
        callback()

    statuses = dict(Intervention.objects.values_list("customer_id", "reason"))
    assert emails() == []
    assert set(Intervention.objects.values_list("status", flat=True)) == {InterventionStatus.SUPPRESSED}
    assert statuses == {
        early.pk: "opted out",
        late.pk: "at send time: opted out",
        never.pk: "no marketing consent",
    }


@pytest.mark.parametrize("closed", [AlertStatus.DISMISSED, AlertStatus.RESOLVED])
def test_a_coupon_email_waiting_for_its_send_when_staff_close_the_alert_is_not_sent(
    run,
    closed: str,
    django_capture_on_commit_callbacks,  # noqa: ANN001
) -> None:
    """A queued email (retrying with backoff, say) used to go out after staff dismissed the alert, which stayed
    dismissed although its customer got a coupon."""
    score_make(customer_make(1), run, 0.9)
    with django_capture_on_commit_callbacks(execute=False) as queued:
        alert_rule_apply(rule=rule_make(), scores=ChurnScore.objects.all(), actor="test")
    alert_transition(alert=Alert.objects.get(), status=closed, actor="user:ann")
    for callback in queued:  # the send task runs after the alert was closed
        callback()
    send_coupon_email_task.apply(args=[Intervention.objects.get().pk])  # redelivered: nothing more happens

    intervention = Intervention.objects.get()
    assert emails() == []
    assert (intervention.status, intervention.reason) == ("suppressed", f"at send time: alert {closed}")
    assert AuditEntry.objects.filter(intervention=intervention, action="intervention_suppressed").count() == 1
    assert Alert.objects.get().status == closed


def test_coupon_validity_and_the_daily_send_counter_count_the_sites_days(
    run,
    settings,
    monkeypatch,
    django_capture_on_commit_callbacks,  # noqa: ANN001
) -> None:
    """At 01:30 in Shanghai (17:30 UTC the day before) a 14-day coupon used to be valid for 13 local days, and the
    daily cap's day turned at 08:00 local time."""
    settings.TIME_ZONE = "Asia/Shanghai"
    monkeypatch.setattr(timezone, "now", lambda: datetime(2026, 3, 9, 17, 30, tzinfo=UTC))
    assert timezone.localdate() == date(2026, 3, 10)
    score_make(customer_make(1), run, 0.9)

    with django_capture_on_commit_callbacks(execute=True):
        alert_rule_apply(rule=rule_make(coupon_valid_days=14), scores=ChurnScore.objects.all(), actor="test")

    assert Intervention.objects.get().coupon_valid_until == date(2026, 3, 24), "14 days from the site's date"
    assert list(DailySendCounter.objects.values_list("day", "reserved")) == [(date(2026, 3, 10), 1)]


@pytest.fixture
def scripted_backend(settings):  # noqa: ANN001, ANN201
    settings.EMAIL_BACKEND = "tests.alerts.helpers.ScriptedBackend"
    settings.ALERTS_RETRY_BACKOFF_SECONDS = 0
    ScriptedBackend.reset()
    yield ScriptedBackend
    ScriptedBackend.reset()


def test_errors_before_the_message_left_retry_then_send_once(
    run,
    scripted_backend,
    django_capture_on_commit_callbacks,  # noqa: ANN001
) -> None:
    # Connecting: the server went away, DNS failed, TLS failed, the soft time limit; handing over: a 4xx reply.
    scripted_backend.open_errors = [
        transient_error(),
        socket.gaierror(-3, "Temporary failure in name resolution"),
        ssl.SSLError("handshake failed"),
        SoftTimeLimitExceeded(),
    ]
    scripted_backend.errors = [smtplib.SMTPDataError(451, b"4.3.0 try again later")]
    score_make(customer_make(1), run, 0.9)

    with django_capture_on_commit_callbacks(execute=True):
        alert_rule_apply(rule=rule_make(), scores=ChurnScore.objects.all(), actor="test")

    intervention = Intervention.objects.get()
    assert (intervention.status, intervention.attempts, len(scripted_backend.outbox)) == ("sent", 6, 1)
    failed = AuditEntry.objects.filter(intervention=intervention, action="intervention_attempt_failed")
    assert [entry.details["attempt"] for entry in failed.order_by("id")] == [1, 2, 3, 4, 5]
    assert "gaierror" in failed.order_by("id")[1].details["error"]


@pytest.mark.parametrize(
    "error",
    [
        smtplib.SMTPServerDisconnected("connection unexpectedly closed"),
        TimeoutError("timed out waiting for the reply"),
        ConnectionResetError("reset by peer"),
        SoftTimeLimitExceeded(),
    ],
    ids=["disconnected", "timeout", "reset", "soft-time-limit"],
)
def test_an_error_while_handing_the_message_over_fails_it_and_never_sends_twice(
    run,
    scripted_backend,
    error,
    django_capture_on_commit_callbacks,  # noqa: ANN001
) -> None:
    from alerts.tasks import requeue_pending_task

    scripted_backend.errors = [error]
    score_make(customer_make(1), run, 0.9)

    with django_capture_on_commit_callbacks(execute=True):
        alert_rule_apply(rule=rule_make(), scores=ChurnScore.objects.all(), actor="test")
    Intervention.objects.update(updated_at=as_of(-1))
    requeued = requeue_pending_task.apply().get()
    redelivered = send_coupon_email_task.apply(args=[Intervention.objects.get().pk]).get()

    intervention = Intervention.objects.get()
    assert (intervention.status, intervention.attempts, requeued, redelivered) == ("failed", 1, 0, "failed")
    assert intervention.reason.startswith("delivery unknown, not retried"), intervention.reason
    assert type(error).__name__ in intervention.reason
    assert scripted_backend.outbox == []


def test_an_address_django_refuses_fails_the_send_without_leaving_its_delivery_unknown(
    run,
    django_capture_on_commit_callbacks,  # noqa: ANN001
) -> None:
    """Django refuses a line break in To before anything is handed over (BadHeaderError; ValueError from
    sanitize_address over SMTP): the email certainly did not leave, so it is no contact for the customer cooldown."""
    customer = customer_make(1, email="c1@example.com\r\nBcc: everyone@example.org")
    score_make(customer, run, 0.9)
    with django_capture_on_commit_callbacks(execute=True):
        alert_rule_apply(rule=rule_make(name="first"), scores=ChurnScore.objects.all(), actor="test")

    intervention = Intervention.objects.get()
    assert (intervention.status, emails()) == ("failed", [])
    assert intervention.reason.startswith("not sent, the message cannot be sent"), intervention.reason
    with django_capture_on_commit_callbacks(execute=False):
        alert_rule_apply(rule=rule_make(name="second"), scores=ChurnScore.objects.all(), actor="test")
    second = Intervention.objects.get(alert__rule__name="second")
    assert second.reason != "customer contacted within the cooldown"


def test_a_server_without_the_configured_starttls_fails_the_send_without_retrying(
    run,
    scripted_backend,
    django_capture_on_commit_callbacks,  # noqa: ANN001
) -> None:
    scripted_backend.open_errors = [smtplib.SMTPNotSupportedError("STARTTLS extension not supported by server.")]
    score_make(customer_make(1), run, 0.9)

    with django_capture_on_commit_callbacks(execute=True):
        alert_rule_apply(rule=rule_make(), scores=ChurnScore.objects.all(), actor="test")

    intervention = Intervention.objects.get()
    assert (intervention.status, intervention.attempts, scripted_backend.outbox) == ("failed", 1, [])
    assert intervention.reason.startswith("SMTPNotSupportedError")


def test_an_error_while_closing_after_the_server_took_the_message_counts_as_sent(
    run,
    scripted_backend,
    django_capture_on_commit_callbacks,  # noqa: ANN001
) -> None:
    scripted_backend.close_errors = [TimeoutError("QUIT timed out")]
    score_make(customer_make(1), run, 0.9)

    with django_capture_on_commit_callbacks(execute=True):
        alert_rule_apply(rule=rule_make(), scores=ChurnScore.objects.all(), actor="test")

    intervention = Intervention.objects.get()
    assert (intervention.status, intervention.attempts, len(scripted_backend.outbox)) == ("sent", 1, 1)


def test_reenqueued_sends_get_no_more_attempts_in_all_than_the_retry_cap(
    run,
    scripted_backend,
    settings,
    django_capture_on_commit_callbacks,  # noqa: ANN001
) -> None:
    from alerts.tasks import requeue_pending_task

    settings.ALERTS_SEND_MAX_RETRIES = 2
    scripted_backend.open_errors = [transient_error() for _ in range(3)]  # the fourth attempt would send
    score_make(customer_make(1), run, 0.9)
    with django_capture_on_commit_callbacks(execute=False):
        alert_rule_apply(rule=rule_make(), scores=ChurnScore.objects.all(), actor="test")
    intervention = Intervention.objects.get()
    for _ in range(2):  # two deliveries whose retries were lost with their worker: each recorded one attempt
        with pytest.raises(TransientSendError):
            intervention_send_email(intervention_id=intervention.pk)
    Intervention.objects.update(updated_at=as_of(-1))

    assert requeue_pending_task.apply().get() == 1  # a fresh task: its first try fails, its retry finds no attempt left
    intervention.refresh_from_db()
    assert intervention.reason.startswith("gave up after 3 attempts: SMTPServerDisconnected"), intervention.reason
    assert (intervention.status, intervention.attempts, scripted_backend.outbox) == ("failed", 3, [])


def test_permanent_smtp_error_fails_without_retry(
    run,
    scripted_backend,
    django_capture_on_commit_callbacks,  # noqa: ANN001
) -> None:
    scripted_backend.errors = [permanent_error(), transient_error()]
    score_make(customer_make(1), run, 0.9)

    with django_capture_on_commit_callbacks(execute=True):
        alert_rule_apply(rule=rule_make(), scores=ChurnScore.objects.all(), actor="test")

    intervention = Intervention.objects.get()
    assert (intervention.status, intervention.attempts) == ("failed", 1)
    assert "SMTPRecipientsRefused" in intervention.reason and scripted_backend.outbox == []
    # The append-only audit log outlives the customer: it says who by id and keeps no address.
    entry = AuditEntry.objects.get(action="intervention_failed")
    assert entry.details["customer_id"] == intervention.customer_id
    assert "SMTPRecipientsRefused" in entry.details["reason"] and "x@example.com" not in str(entry.details)


def test_every_audit_entry_masks_email_addresses_in_its_details() -> None:
    # A retried temporary refusal (450) wrote its error, with the recipient, unmasked; so could any other entry.
    from alerts.services import audit_record

    entry = audit_record(
        actor="system:email",
        action="intervention_attempt_failed",
        details={
            "error": "SMTPRecipientsRefused: {'c1@example.com': (450, b'4.2.0 <c1@example.com> mailbox busy')}",
            "tried": ["ivan@почта.рф", "a@b"],
            "attempt": 2,
        },
    )

    entry.refresh_from_db()
    assert "@" not in str(entry.details), entry.details
    assert entry.details["attempt"] == 2 and entry.details["tried"] == ["<address>", "<address>"]


def test_transient_errors_fail_after_the_retry_cap(
    run,
    scripted_backend,
    settings,
    django_capture_on_commit_callbacks,  # noqa: ANN001
) -> None:
    settings.ALERTS_SEND_MAX_RETRIES = 2
    scripted_backend.open_errors = [transient_error() for _ in range(10)]
    score_make(customer_make(1), run, 0.9)

    with django_capture_on_commit_callbacks(execute=True):
        alert_rule_apply(rule=rule_make(), scores=ChurnScore.objects.all(), actor="test")

    intervention = Intervention.objects.get()
    assert (intervention.status, intervention.attempts) == ("failed", 3)
    assert intervention.reason.startswith("gave up after retries")


def test_daily_cap_and_customer_cooldown_hold_under_a_burst_of_10000_alerts(
    settings,
    django_capture_on_commit_callbacks,  # noqa: ANN001
) -> None:
    settings.ALERTS_DAILY_SEND_CAP = 40
    from customers.models import Customer

    Customer.objects.bulk_create(
        [Customer(external_id=f"b{i}", email=f"b{i}@example.com", marketing_consent=True) for i in range(10_000)]
    )
    run = scoring_run_make(model_version_make(), at=as_of())
    ids = list(Customer.objects.order_by("id").values_list("id", flat=True))
    ChurnScore.objects.bulk_create(
        [
            ChurnScore(customer_id=pk, model_version=run.model_version, scoring_run=run, as_of=run.as_of,
                       probability=0.9, risk_tier="high")
            for pk in ids
        ]
    )  # fmt: skip
    rule_make(name="a: every customer")
    rule_make(name="b: top 100", trigger=TriggerKind.TOP_N, top_n=100)  # includes the 40 the first rule contacts

    with django_capture_on_commit_callbacks(execute=True):
        results = alerts_apply_rules(actor="test")

    assert [r.alerts_created for r in results] == [10_000, 100]
    pending_or_sent = Intervention.objects.filter(status__in=("pending", "sent"))
    contacted = list(pending_or_sent.values_list("customer_id", flat=True))
    assert len(contacted) == 40, "the daily cap"
    assert len(set(contacted)) == 40, "the cooldown: nobody gets two coupons from two rules at once"
    assert len(emails()) == 40
    assert DailySendCounter.objects.get().reserved == 40
    assert Intervention.objects.filter(reason="customer contacted within the cooldown").count() == 40
    assert Intervention.objects.filter(reason="daily send cap reached").count() == (10_000 - 40) + (100 - 40)


def test_holdout_is_a_deterministic_hash_placing_the_fraction_in_control() -> None:
    assigned = [holdout_assigned(customer_id=i, rule_id=7, fraction=0.1) for i in range(20_000)]
    again = [holdout_assigned(customer_id=i, rule_id=7, fraction=0.1) for i in range(20_000)]
    other_rule = [holdout_assigned(customer_id=i, rule_id=8, fraction=0.1) for i in range(20_000)]

    assert assigned == again
    assert 0.09 < sum(assigned) / len(assigned) < 0.11
    assert assigned != other_rule


def test_holdout_customers_are_alerted_but_never_contacted(
    django_capture_on_commit_callbacks,  # noqa: ANN001
) -> None:
    run = scoring_run_make(model_version_make(), at=as_of())
    for i in range(60):
        score_make(customer_make(i), run, 0.9)
    rule = rule_make(holdout_fraction=0.5)

    with django_capture_on_commit_callbacks(execute=True):
        alert_rule_apply(rule=rule, scores=ChurnScore.objects.all(), actor="test")

    holdout = Intervention.objects.filter(status=InterventionStatus.HOLDOUT)
    assert 15 < holdout.count() < 45
    assert not holdout.exclude(coupon_code=None).exists()
    assert set(holdout.values_list("alert__holdout", flat=True)) == {True}
    assert len(emails()) == Intervention.objects.filter(status="sent").count() == 60 - holdout.count()


def test_coupon_codes_are_unique_and_carry_80_random_bits() -> None:
    codes = {coupon_code_new() for _ in range(5000)}
    assert len(codes) == 5000
    assert all(re.fullmatch(r"[A-Z2-7]{4}(-[A-Z2-7]{4}){3}", code) for code in codes)


def test_outcomes_after_the_horizon_and_the_uplift_report(
    django_capture_on_commit_callbacks,  # noqa: ANN001
) -> None:
    run = scoring_run_make(model_version_make(), at=as_of())
    customers = [customer_make(i) for i in range(40)]
    for customer in customers:
        score_make(customer, run, 0.9)
    rule = rule_make(holdout_fraction=0.5, horizon_days=30, coupon_cost=Decimal("5"))
    with django_capture_on_commit_callbacks(execute=True):
        alert_rule_apply(rule=rule, scores=ChurnScore.objects.all(), actor="test")
    interventions = list(Intervention.objects.order_by("customer_id"))
    # Treated customers order again inside the horizon when their id is even; control ones when divisible by 4.
    for intervention in interventions:
        retained = intervention.customer_id % (2 if intervention.status == "sent" else 4) == 0
        if retained:
            order_make(intervention.customer, amount="30", placed_at=as_of(+10))
        else:
            order_make(intervention.customer, amount="30", placed_at=as_of(+45))  # too late

    Intervention.objects.update(created_at=as_of())  # dispatched when the score came in
    assert intervention_outcomes_record(now=as_of(+29)) == {"retained": 0, "churned": 0}, "horizon not passed"
    counts = intervention_outcomes_record(now=as_of(+31))
    assert intervention_outcomes_record(now=as_of(+40)) == {"retained": 0, "churned": 0}, "idempotent"

    treated = [i for i in interventions if i.status == "sent"]
    control = [i for i in interventions if i.status == "holdout"]
    treated_retained = sum(i.customer_id % 2 == 0 for i in treated)
    control_retained = sum(i.customer_id % 4 == 0 for i in control)
    report = alert_rule_uplift(rule=rule)
    assert counts["retained"] == treated_retained + control_retained
    assert (report.treated, report.treated_retained, report.control, report.control_retained) == (
        len(treated), treated_retained, len(control), control_retained,
    )  # fmt: skip
    assert report.coupons_cost == Decimal("5") * len(treated)
    assert report.difference == pytest.approx(treated_retained / len(treated) - control_retained / len(control))


def test_treated_customer_ids_lists_customers_sent_an_action_only(
    run,
    django_capture_on_commit_callbacks,  # noqa: ANN001
) -> None:
    treated, unconsented = customer_make(1), customer_make(2, consent=False)
    for customer in (treated, unconsented):
        score_make(customer, run, 0.9)
    with django_capture_on_commit_callbacks(execute=True):
        alert_rule_apply(rule=rule_make(), scores=ChurnScore.objects.all(), actor="test")
    sent_at = Intervention.objects.get(customer=treated).sent_at

    assert list(treated_customer_ids()) == [treated.pk]
    assert list(treated_customer_ids(since=sent_at + timedelta(seconds=1))) == []


def test_every_alert_change_and_action_is_in_the_append_only_audit_log(
    run,
    django_capture_on_commit_callbacks,  # noqa: ANN001
) -> None:
    score_make(customer_make(1), run, 0.9)
    with django_capture_on_commit_callbacks(execute=True):
        alert_rule_apply(rule=rule_make(), scores=ChurnScore.objects.all(), actor="system:test")
    alert = Alert.objects.get()
    alert_transition(alert=alert, status=AlertStatus.RESOLVED, actor="user:ann", note="called her")

    actions = list(AuditEntry.objects.order_by("id").values_list("actor", "action"))
    assert actions == [
        ("system:test", "alert_created"),
        ("system:email", "intervention_sent"),
        ("user:ann", "alert_status"),
    ]
    assert AuditEntry.objects.get(action="alert_created").details["intervention"] == "pending"
    entry = AuditEntry.objects.first()
    entry.action = "rewritten"
    with pytest.raises(ValueError, match="append-only"):
        entry.save()
    with pytest.raises(ValueError, match="append-only"):
        entry.delete()


def test_alert_transitions_follow_the_state_machine(run) -> None:  # noqa: ANN001
    score_make(customer_make(1), run, 0.9)
    alert_rule_apply(rule=rule_make(action=ActionKind.NONE), scores=ChurnScore.objects.all(), actor="test")
    alert = Alert.objects.get()

    alert_transition(alert=alert, status=AlertStatus.DISMISSED, actor="user:ann")
    alert_transition(alert=alert, status=AlertStatus.DISMISSED, actor="user:ann")  # idempotent
    with pytest.raises(AlertTransitionError, match="cannot go from dismissed to resolved"):
        alert_transition(alert=alert, status=AlertStatus.RESOLVED, actor="user:ann")
    assert AuditEntry.objects.filter(action="alert_status").count() == 1


def test_example_rule_is_created_once_and_active() -> None:
    first = alert_rule_ensure_example()
    second = alert_rule_ensure_example()

    assert first.pk == second.pk and AlertRule.objects.count() == 1
    assert (first.active, first.trigger, first.top_percent, first.action, first.holdout_fraction) == (
        True, TriggerKind.TOP_PERCENT, 5.0, ActionKind.COUPON_EMAIL, 0.10,
    )  # fmt: skip


def test_after_scoring_task_applies_the_rules_to_that_run_only(django_capture_on_commit_callbacks) -> None:  # noqa: ANN001
    model_version = model_version_make()
    old_run = scoring_run_make(model_version, at=as_of(-20))
    new_run = scoring_run_make(model_version, at=as_of())
    old_customer, new_customer = customer_make(1), customer_make(2)
    score_make(old_customer, old_run, 0.9)
    score_make(new_customer, new_run, 0.9)
    rule_make()

    with django_capture_on_commit_callbacks(execute=True):
        created = alerts_after_scoring_task.apply(args=[new_run.pk]).get()

    assert created == {"test rule": 1}
    assert list(Alert.objects.values_list("customer_id", flat=True)) == [new_customer.pk]
    assert len(emails()) == 1


def test_churn_generate_creates_the_active_example_rule() -> None:
    from django.core.management import call_command

    call_command("churn_generate", "--customers", "5", "--days", "10", "--end", "2024-03-01", "--seed", "1")

    assert list(AlertRule.objects.filter(active=True).values_list("name", flat=True)) == [
        "Top 5% by expected loss: coupon email"
    ]


def test_a_finished_scoring_run_starts_the_alert_rules(settings, django_capture_on_commit_callbacks) -> None:  # noqa: ANN001
    from predictions.models import ScoringRun
    from predictions.services.scoring import scoring_run_finish

    settings.CHURN_AFTER_SCORING_TASKS = ["alerts.tasks.alerts_after_scoring_task"]
    run = scoring_run_make(model_version_make(), at=as_of())
    ScoringRun.objects.filter(pk=run.pk).update(status=ScoringRun.Status.RUNNING)
    score_make(customer_make(1), run, 0.9)
    rule_make()

    with django_capture_on_commit_callbacks(execute=True):
        scoring_run_finish(scoring_run_id=run.pk)

    assert Alert.objects.count() == 1
    assert len(emails()) == 1


def test_lost_sends_are_enqueued_again_and_sent_once(run, django_capture_on_commit_callbacks) -> None:  # noqa: ANN001
    from alerts.tasks import requeue_pending_task

    score_make(customer_make(1), run, 0.9)
    with django_capture_on_commit_callbacks(execute=False):  # the broker "lost" the task
        alert_rule_apply(rule=rule_make(), scores=ChurnScore.objects.all(), actor="test")
    Intervention.objects.update(updated_at=as_of(-1))

    assert requeue_pending_task.apply().get() == 1
    assert requeue_pending_task.apply().get() == 0
    assert Intervention.objects.get().status == "sent" and len(emails()) == 1


def test_control_group_passes_the_same_gates_as_the_treated(settings, django_capture_on_commit_callbacks) -> None:  # noqa: ANN001
    settings.ALERTS_DAILY_SEND_CAP = 10
    run = scoring_run_make(model_version_make(), at=as_of())
    for i in range(80):
        customer = customer_make(i, consent=i % 5 != 0)  # every fifth customer never consented
        order_make(customer, amount="100", placed_at=as_of(-5))
        score_make(customer, run, 0.2 + i * 0.009)
    with django_capture_on_commit_callbacks(execute=True):
        alert_rule_apply(rule=rule_make(holdout_fraction=0.5), scores=ChurnScore.objects.all(), actor="test")

    holdout = Intervention.objects.filter(status="holdout").select_related("alert", "customer")
    sent = Intervention.objects.filter(status="sent").select_related("alert")
    assert sent.count() == 10 and holdout.count() > 0
    assert all(i.customer.marketing_consent for i in holdout), "no unconsented customer in the control group"
    lowest_sent = min(i.alert.expected_loss for i in sent)
    cut = max(
        i.alert.expected_loss
        for i in Intervention.objects.filter(reason="daily send cap reached").select_related("alert")
    )
    assert cut < lowest_sent
    assert all(i.alert.expected_loss > cut for i in holdout), "the control group is drawn from above the cap's cut too"


def test_a_rule_without_cooldown_alerts_once_a_day(django_capture_on_commit_callbacks) -> None:  # noqa: ANN001
    customer = customer_make(1)
    model_version = model_version_make()
    rule = rule_make(cooldown_days=0, action=ActionKind.NONE)
    for hours in (0, 0, 3, 24):
        run = scoring_run_make(model_version, at=as_of() + timedelta(hours=hours))
        ChurnScore.objects.get_or_create(
            customer=customer, model_version=model_version, as_of=run.as_of,
            defaults={"scoring_run": run, "probability": 0.9, "risk_tier": "high"},
        )  # fmt: skip
        alert_rule_apply(rule=rule, scores=ChurnScore.objects.filter(as_of=run.as_of), actor="test")

    assert sorted(Alert.objects.values_list("period_start", flat=True)) == [as_of().date(), as_of(1).date()]


def test_budget_limits_the_contacted_customers_to_what_it_pays_for(run) -> None:  # noqa: ANN001
    for i in range(40):
        customer = customer_make(i)
        order_make(customer, amount=str(100 + i), placed_at=as_of(-3))
        score_make(customer, run, 0.9)
    rule = rule_make(budget=Decimal("50"), coupon_cost=Decimal("10"), holdout_fraction=0.3)

    alert_rule_apply(rule=rule, scores=ChurnScore.objects.all(), actor="test")

    treated = Alert.objects.filter(holdout=False)
    assert treated.count() == 5, "50 / 10 per coupon"
    assert Alert.objects.filter(holdout=True).exists()
    lowest_treated = min(treated.values_list("expected_loss", flat=True))
    assert all(a.expected_loss >= lowest_treated for a in Alert.objects.all()), (
        "the budget (and the control group) take the highest losses"
    )


def _customers_in_holdout(rule: AlertRule, n: int) -> list:
    """``n`` customers whom the hash puts in ``rule``'s control group."""
    found, i = [], 0
    while len(found) < n:
        customer = customer_make(i)
        if holdout_assigned(customer_id=customer.pk, rule_id=rule.pk, fraction=rule.holdout_fraction):
            found.append(customer)
        else:
            customer.delete()
        i += 1
    return found


def test_a_control_customer_of_one_rule_gets_no_action_from_another_while_its_window_is_open(
    run,  # noqa: ANN001
    django_capture_on_commit_callbacks,  # noqa: ANN001
) -> None:
    measured = rule_make(name="A measured", holdout_fraction=0.5, horizon_days=3650)  # window open today
    other = rule_make(name="B", holdout_fraction=0.0)
    (customer,) = _customers_in_holdout(measured, 1)
    score_make(customer, run, 0.9)

    with django_capture_on_commit_callbacks(execute=True):
        alert_rule_apply(rule=measured, scores=ChurnScore.objects.all(), actor="t")
        alert_rule_apply(rule=other, scores=ChurnScore.objects.all(), actor="t")
        manual = customer_send_coupon(customer=customer, actor="user:ann")  # the open alert of rule B

    statuses = dict(Intervention.objects.values_list("alert__rule__name", "status"))
    assert statuses == {"A measured": InterventionStatus.HOLDOUT, "B": InterventionStatus.SUPPRESSED}
    assert Intervention.objects.get(alert__rule=other).reason == "control group of rule 'A measured'"
    assert manual.alert.rule == other and manual.status == InterventionStatus.SUPPRESSED and emails() == []
    Intervention.objects.update(created_at=as_of())
    intervention_outcomes_record(now=as_of(+3651))
    assert alert_rule_uplift(rule=measured).control == 1


def test_uplift_counts_every_alert_once_as_intention_to_treat(
    run,  # noqa: ANN001
    scripted_backend,  # noqa: ANN001
    django_capture_on_commit_callbacks,  # noqa: ANN001
) -> None:
    one, other, early, late = (customer_make(i) for i in range(4))
    customer_opt_out(customer=early)  # before the alert: suppressed at dispatch, in neither group
    for customer in (one, other, early, late):
        score_make(customer, run, 0.9)
    rule = rule_make(horizon_days=30)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        alert_rule_apply(rule=rule, scores=ChurnScore.objects.all(), actor="t")
    unsubscribe_customer(token=unsubscribe_token(customer_id=late.pk))  # after the dispatch, before the send
    scripted_backend.errors = [permanent_error()]  # of the two emails that go out, the first bounces
    for callback in callbacks:
        callback()
    # One alert also gets a webhook by hand: a second intervention of another kind must not count it twice.
    coupon = Intervention.objects.get(customer=other)
    Intervention.objects.create(
        alert=coupon.alert, customer=other, kind=ActionKind.WEBHOOK, status="sent", sent_at=as_of(),
        idempotency_key="by hand",
    )  # fmt: skip
    Intervention.objects.update(created_at=as_of())

    intervention_outcomes_record(now=as_of(+31))
    report = alert_rule_uplift(rule=rule)

    statuses = dict(Intervention.objects.filter(kind=ActionKind.COUPON_EMAIL).values_list("customer_id", "status"))
    assert sorted(statuses.values()) == ["failed", "sent", "suppressed", "suppressed"], statuses
    assert (report.treated, report.control) == (3, 0)  # bounced, sent and opted out at send time


def test_the_uplift_of_many_rules_at_once_is_each_rules_own_uplift() -> None:
    coupon, webhook, pending = (
        rule_make(name="coupon", coupon_cost=Decimal("5")),
        rule_make(name="webhook", action=ActionKind.WEBHOOK, webhook_url="https://crm.example.com/hook"),
        rule_make(name="pending"),
    )
    # (rule, kind, status, reason, outcome, coupon cost) of one intervention each.
    interventions = [
        (coupon, ActionKind.COUPON_EMAIL, "sent", "", "retained", "5.00"),
        (coupon, ActionKind.COUPON_EMAIL, "sent", "", "retained", "5.00"),
        (coupon, ActionKind.COUPON_EMAIL, "sent", "", "churned", "7.50"),
        (coupon, ActionKind.COUPON_EMAIL, "failed", "bounced", "churned", "0"),
        (coupon, ActionKind.COUPON_EMAIL, "suppressed", "at send time: opted out", "retained", "0"),
        (coupon, ActionKind.COUPON_EMAIL, "suppressed", "cooldown", "retained", "0"),  # at dispatch: in neither
        (coupon, ActionKind.COUPON_EMAIL, "holdout", "", "retained", "0"),
        (coupon, ActionKind.COUPON_EMAIL, "holdout", "", "churned", "0"),
        (coupon, ActionKind.COUPON_EMAIL, "sent", "", "unknown", "5.00"),  # outcome not known yet
        (webhook, ActionKind.WEBHOOK, "sent", "", "retained", "0"),
        (webhook, ActionKind.WEBHOOK, "holdout", "", "churned", "0"),
        (webhook, ActionKind.COUPON_EMAIL, "sent", "", "retained", "9.00"),  # by hand: not the rule's action
        (pending, ActionKind.COUPON_EMAIL, "sent", "", "unknown", "5.00"),
    ]
    for n, (rule, kind, status, reason, outcome, cost) in enumerate(interventions):
        customer = customer_make(n)
        alert = Alert.objects.create(
            customer=customer, rule=rule, period_start=as_of().date(), as_of=as_of(), probability=0.9, risk_tier="high"
        )
        Intervention.objects.create(
            alert=alert, customer=customer, kind=kind, status=status, reason=reason, outcome=outcome,
            coupon_cost=Decimal(cost), sent_at=as_of() if status == "sent" else None, idempotency_key=f"k{n}",
            by_rule=kind == rule.action,  # as dispatching marks the rule's own
        )  # fmt: skip

    together = alert_rules_uplift(rules=[coupon, webhook, pending])

    assert together == {rule.pk: alert_rule_uplift(rule=rule) for rule in (coupon, webhook, pending)}
    counts = {
        rule.name: (
            report.treated,
            report.treated_retained,
            report.control,
            report.control_retained,
            report.coupons_cost,
        )
        for rule, report in zip((coupon, webhook, pending), together.values(), strict=True)
    }
    assert counts == {
        "coupon": (5, 3, 2, 1, Decimal("17.50")),
        "webhook": (1, 1, 1, 0, Decimal("0")),
        "pending": (0, 0, 0, 0, Decimal("0")),
    }


def test_an_order_placed_before_the_coupon_went_out_does_not_count_for_it(
    run,  # noqa: ANN001
    django_capture_on_commit_callbacks,  # noqa: ANN001
) -> None:
    customer = customer_make(1)
    score_make(customer, run, 0.9)
    order_make(customer, amount="30", placed_at=as_of(+5))  # after the score, before the dispatch
    rule = rule_make(horizon_days=30)
    with django_capture_on_commit_callbacks(execute=True):
        alert_rule_apply(rule=rule, scores=ChurnScore.objects.all(), actor="t")
    Intervention.objects.update(created_at=as_of(+10))  # the rule acted on a 10-day-old score

    assert intervention_outcomes_record(now=as_of(+39)) == {"retained": 0, "churned": 0}, "30 days after dispatch"
    assert intervention_outcomes_record(now=as_of(+41)) == {"retained": 0, "churned": 1}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("segments", "vip"),  # a string, not a list: it used to match by substring
        ("segment_thresholds", {"vip": "high"}),
        ("segment_thresholds", {"vip": 7}),
        ("attribute_filters", ["plan"]),
    ],
)
def test_rule_json_fields_are_validated_and_a_bad_rule_never_stops_the_others(
    run,  # noqa: ANN001
    field: str,
    value: object,
) -> None:
    from django.core.exceptions import ValidationError

    from alerts.services import alert_rule_create

    with pytest.raises(ValidationError) as caught:
        alert_rule_create(actor="t", name="bad", **{field: value})
    assert list(caught.value.message_dict) == [field]
    score_make(customer_make(1), run, 0.9)
    rule_make(name="a bad one", action=ActionKind.NONE)
    AlertRule.objects.filter(name="a bad one").update(**{field: value})  # saved before validation existed
    rule_make(name="b good one", action=ActionKind.NONE)

    applied = alerts_apply_rules(actor="t")

    assert [a.rule for a in applied] == ["b good one"] and Alert.objects.get().rule.name == "b good one"
    skipped = AuditEntry.objects.get(action="rule_skipped")
    assert skipped.rule.name == "a bad one" and list(skipped.details["invalid"]) == [field]
    with pytest.raises(ValidationError):
        alerts_apply_rules(actor="t", rule_name="a bad one")


def test_webhook_secrets_never_reach_the_audit_log() -> None:
    from alerts.services import alert_rule_create, alert_rule_update

    rule = alert_rule_create(
        actor="user:ann", name="hook", action=ActionKind.WEBHOOK, webhook_url="https://crm.example.com/hook",
        webhook_secret="s3cr3t-hmac-key",
    )  # fmt: skip
    alert_rule_update(rule=rule, actor="user:ann", webhook_secret="rotated-key")

    logged = str(list(AuditEntry.objects.values_list("details", flat=True)))
    assert "s3cr3t" not in logged and "rotated" not in logged and "(secret, not recorded)" in logged


def test_a_coupon_send_parked_after_worker_crashes_counts_as_a_possible_contact(
    django_capture_on_commit_callbacks,  # noqa: ANN001
) -> None:
    # A worker killed after the mail server took the message, again and again: the send is parked. It may have
    # arrived, so the customer cooldown and the --replace guard must count it (they did not).
    from alerts.selectors import interventions_that_may_have_reached
    from alerts.services import _recently_contacted
    from alerts.tasks import send_coupon_email_task
    from customers.models import Customer
    from predictions.models import TaskDelivery
    from tests.alerts.helpers import as_of, customer_make, model_version_make, score_make, scoring_run_make

    run = scoring_run_make(model_version_make(), at=as_of())
    customer = customer_make(1)
    score_make(customer, run, 0.9)
    rule = AlertRule.objects.create(
        name="parked", trigger=TriggerKind.PROBABILITY, threshold=0.5, action=ActionKind.COUPON_EMAIL,
        holdout_fraction=0.0, cooldown_days=7,
    )  # fmt: skip
    with django_capture_on_commit_callbacks(execute=False):  # dispatched; the send task not run yet
        alert_rule_apply(rule=rule, scores=ChurnScore.objects.all(), actor="test")
    intervention = Intervention.objects.get()
    TaskDelivery.objects.create(
        task_name="alerts.send_coupon_email", key=f"intervention-{intervention.pk}-t1-try-0", attempts=3
    )

    assert send_coupon_email_task.apply(args=[intervention.pk], task_id="t1").get() == "failed"

    intervention.refresh_from_db()
    assert intervention.status == InterventionStatus.FAILED
    assert intervention.reason.startswith("delivery unknown")
    assert _recently_contacted({customer.pk}) == {customer.pk}
    assert interventions_that_may_have_reached(customers=Customer.objects.filter(pk=customer.pk)).exists()
