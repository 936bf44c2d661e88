"""Rule findings of an audit, each pinned: exact top-percent counts, the queue's order, the control-group gate on
both groups, odd attributes, filters that compare as the importer typed the values, a score interval that stays
honest at the extremes, a budget spent only on reachable customers, and a coupon of unknown delivery counting as
a contact."""

from __future__ import annotations

from decimal import Decimal

import pytest

from alerts.models import ActionKind, Alert, AlertRule, Intervention, InterventionStatus, TriggerKind
from alerts.selectors import MEASURED_CONTROL, MEASURED_TREATED, alerts_queue, uplift_from_counts
from alerts.services import _triggered, alert_rule_apply, holdout_assigned
from predictions.models import ChurnScore
from tests.alerts.helpers import (
    as_of,
    customer_make,
    model_version_make,
    order_make,
    score_make,
    scoring_run_make,
)
from tests.alerts.test_services import rule_make

pytestmark = pytest.mark.django_db


@pytest.fixture
def run():  # noqa: ANN201
    return scoring_run_make(model_version_make(), at=as_of())


def test_top_percent_counts_exactly() -> None:
    # 64.4% of 250 customers is exactly 161; float n*p/100 = 161.00000000000003 and ceil gives 162.
    rule = AlertRule(trigger=TriggerKind.TOP_PERCENT, top_percent=64.4)
    rows = [
        {"customer_id": i, "expected_loss": Decimal(i), "probability": 0.5, "customer__segment": ""} for i in range(250)
    ]
    assert len(_triggered(rule, rows)) == 161


def test_alert_queue_is_most_valuable_first(run) -> None:
    customers = [customer_make(i) for i in range(3)]
    for i, customer in enumerate(customers):
        order_make(customer, amount=str(100 * (i + 1)), placed_at=as_of(-3))
        score_make(customer, run, 0.9)
    alert_rule_apply(rule=rule_make(action=ActionKind.NONE), scores=ChurnScore.objects.all(), actor="t")
    losses = [a.expected_loss for a in alerts_queue()]
    assert losses == sorted(losses, reverse=True), losses


def _find(rule: AlertRule, n: int, want: bool, start: int) -> list:
    found, i = [], start
    while len(found) < n:
        c = customer_make(i)
        if holdout_assigned(customer_id=c.pk, rule_id=rule.pk, fraction=rule.holdout_fraction) == want:
            found.append(c)
        else:
            c.delete()
        i += 1
    return found


def test_other_rules_control_gate_applies_to_both_groups(run, django_capture_on_commit_callbacks) -> None:
    b = rule_make(name="B", holdout_fraction=0.99, horizon_days=3650)
    a = rule_make(name="A", holdout_fraction=0.5)
    # customers in B's control group: one lands in A's treated group, one in A's control group
    pool = [c for c in _find(b, 12, True, 0)]
    a_treated = next(c for c in pool if not holdout_assigned(customer_id=c.pk, rule_id=a.pk, fraction=0.5))
    a_control = next(c for c in pool if holdout_assigned(customer_id=c.pk, rule_id=a.pk, fraction=0.5))
    for c in (a_treated, a_control):
        score_make(c, run, 0.9)
    scores = ChurnScore.objects.filter(customer__in=[a_treated, a_control])
    with django_capture_on_commit_callbacks(execute=True):
        alert_rule_apply(rule=b, scores=scores, actor="t")
        alert_rule_apply(rule=a, scores=scores, actor="t")
    measured = Intervention.objects.filter(alert__rule=a).filter(MEASURED_TREATED | MEASURED_CONTROL)
    got = {i.customer_id: i.status for i in Intervention.objects.filter(alert__rule=a)}
    # the treated twin is suppressed ("control group of rule 'B'") and leaves A's measurement; the control twin
    # should leave it too, otherwise only A's control keeps B's (alerted, high-risk) control customers
    assert measured.count() == 0, got


def test_customer_with_non_dict_attributes_does_not_break_the_rule(run) -> None:
    odd = customer_make(1)
    odd.attributes = ["gold"]  # the admin's JSON field accepts any JSON
    odd.save()
    gold = customer_make(2)
    gold.attributes = {"plan": "gold"}
    gold.save()
    for c in (odd, gold):
        score_make(c, run, 0.9)
    rule = rule_make(attribute_filters={"plan": "gold"}, action=ActionKind.NONE)
    alert_rule_apply(rule=rule, scores=ChurnScore.objects.all(), actor="t")
    assert list(Alert.objects.values_list("customer_id", flat=True)) == [gold.pk]


def test_attribute_filter_as_written_in_the_csv_matches_imported_numbers(run) -> None:
    # churn_import stores "1" from a telco CSV as the number 1 (importers._free_value)
    senior = customer_make(1)
    senior.attributes = {"SeniorCitizen": 1}
    senior.save()
    score_make(senior, run, 0.9)
    rule = rule_make(attribute_filters={"SeniorCitizen": "1"}, action=ActionKind.NONE)
    alert_rule_apply(rule=rule, scores=ChurnScore.objects.all(), actor="t")
    assert Alert.objects.count() == 1


@pytest.mark.parametrize(
    ("expected", "alerted"),
    [("007", ["007"]), ("7", [7]), ("07", ["07"]), ("02134", ["02134"]), ("2134.0", [2134]), ("+7", ["+7"])],
)
def test_attribute_filter_on_a_code_with_leading_zeros_compares_it_as_text(run, expected, alerted) -> None:  # noqa: ANN001
    # The importer keeps "007", "07", "02134" and "+7" as text (codes and phone numbers), and makes 7 and 2134 of
    # "7" and "2134": a filter written as text is read by the same rule, so branch "007" is not branch 7.
    for number, code in enumerate(["007", 7, "07", "02134", 2134, "+7"], start=1):
        customer = customer_make(number)
        customer.attributes = {"branch": code}
        customer.save()
        score_make(customer, run, 0.9)
    rule = rule_make(attribute_filters={"branch": expected}, action=ActionKind.NONE)
    alert_rule_apply(rule=rule, scores=ChurnScore.objects.all(), actor="t")
    assert [alert.customer.attributes["branch"] for alert in Alert.objects.order_by("pk")] == alerted


def test_attribute_filter_true_does_not_match_the_number_one(run) -> None:
    c = customer_make(1)
    c.attributes = {"contracts": 1}
    c.save()
    score_make(c, run, 0.9)
    rule = rule_make(attribute_filters={"contracts": True}, action=ActionKind.NONE)
    alert_rule_apply(rule=rule, scores=ChurnScore.objects.all(), actor="t")
    assert Alert.objects.count() == 0, "True matched 1 ('must match exactly')"


def test_the_uplift_interval_keeps_a_width_and_stays_within_minus_one_and_one() -> None:
    everyone = uplift_from_counts(
        treated=5, treated_retained=5, control=5, control_retained=0, coupons_cost=Decimal(50)
    )
    nine = uplift_from_counts(treated=10, treated_retained=9, control=10, control_retained=1, coupons_cost=Decimal(0))
    large = uplift_from_counts(
        treated=4000, treated_retained=2400, control=4000, control_retained=2000, coupons_cost=Decimal(0)
    )

    # Newcombe's hybrid score interval; his worked example (Statistics in Medicine 1998, table II, 56/70 against
    # 48/80) gives 0.0524 to 0.3339.
    example = uplift_from_counts(
        treated=70, treated_retained=56, control=80, control_retained=48, coupons_cost=Decimal(0)
    )
    assert (round(example.ci_low, 4), round(example.ci_high, 4)) == (0.0524, 0.3339)
    assert 0.3 < everyone.ci_low < everyone.ci_high == 1.0
    assert -1.0 <= nine.ci_low < nine.ci_high <= 1.0
    assert large.ci_low == pytest.approx(0.1 - 1.96 * (0.6 * 0.4 / 4000 + 0.5 * 0.5 / 4000) ** 0.5, abs=1e-3)


def test_budget_is_not_spent_on_customers_who_cannot_be_contacted(run) -> None:
    # The 5 most valuable never consented; 5 more consenting customers are below them.
    for i in range(10):
        c = customer_make(i, consent=i >= 5)
        order_make(c, amount=str(1000 - i), placed_at=as_of(-3))
        score_make(c, run, 0.9)
    rule = rule_make(budget=Decimal("50"), coupon_cost=Decimal("10"))
    alert_rule_apply(rule=rule, scores=ChurnScore.objects.all(), actor="t")
    contacted = Intervention.objects.filter(status__in=("pending", "sent")).count()
    assert contacted == 5, f"budget 50 at 10 a coupon contacted {contacted}"


def test_a_coupon_whose_delivery_is_unknown_counts_for_the_customer_cooldown(
    run,
    django_capture_on_commit_callbacks,
) -> None:
    c = customer_make(1)
    score_make(c, run, 0.9)
    first = rule_make(name="first")
    with django_capture_on_commit_callbacks(execute=False):
        alert_rule_apply(rule=first, scores=ChurnScore.objects.all(), actor="t")
    # the send then failed while the message was handed over: it may well have reached the customer
    Intervention.objects.update(
        status=InterventionStatus.FAILED, reason="delivery unknown, not retried so as never to send twice: reset"
    )
    with django_capture_on_commit_callbacks(execute=False):
        alert_rule_apply(rule=rule_make(name="second"), scores=ChurnScore.objects.all(), actor="t")
    second = Intervention.objects.get(alert__rule__name="second")
    assert second.status == InterventionStatus.SUPPRESSED, (second.status, second.reason)
