"""The uplift report against a hand-computed example."""

from __future__ import annotations

from decimal import Decimal

import pytest

from alerts.selectors import uplift_from_counts


def test_uplift_report_matches_a_hand_computed_example() -> None:
    # Treated 120/200 = 0.60 retained, control 50/100 = 0.50: difference 0.10. 95% CI by Newcombe's hybrid score
    # method from the Wilson intervals (0.530837, 0.665394) and (0.403832, 0.596168):
    # 0.10 - sqrt((0.6 - 0.530837)^2 + (0.596168 - 0.5)^2) = 0.10 - 0.118456 = -0.018456,
    # 0.10 + sqrt((0.665394 - 0.6)^2 + (0.5 - 0.403832)^2) = 0.10 + 0.116296 = 0.216296; NNT = 1/0.10 = 10;
    # 200 coupons at 10.00 = 2000.00, over 0.10 * 200 = 20 customers saved = 100.00 each.
    report = uplift_from_counts(
        treated=200, treated_retained=120, control=100, control_retained=50, coupons_cost=Decimal("2000.00")
    )

    assert (report.treated_rate, report.control_rate) == (0.6, 0.5)
    assert report.difference == pytest.approx(0.10)
    assert report.ci_low == pytest.approx(-0.018456, abs=1e-6)
    assert report.ci_high == pytest.approx(0.216296, abs=1e-6)
    assert report.number_needed_to_treat == pytest.approx(10.0)
    assert report.cost_per_customer_saved == Decimal("100.00")


def test_no_number_needed_to_treat_when_treatment_does_not_help() -> None:
    report = uplift_from_counts(
        treated=10, treated_retained=4, control=10, control_retained=5, coupons_cost=Decimal("100")
    )
    assert report.difference == pytest.approx(-0.1)
    assert report.number_needed_to_treat is None and report.cost_per_customer_saved is None


def test_an_empty_group_gives_no_difference() -> None:
    report = uplift_from_counts(treated=5, treated_retained=5, control=0, control_retained=0, coupons_cost=Decimal(0))
    assert report.treated_rate == 1.0 and report.difference is None and report.ci_low is None


def test_uplift_note_says_why_there_is_no_difference_and_when_it_is_not_significant() -> None:
    # The dashboard said "outcomes not known yet" for a rule without a control group (the manual coupons' rule),
    # which it stays forever, and showed a cost per customer saved for a difference whose 95% CI includes 0.
    from alerts.selectors import uplift_note

    def report(t: int, tr: int, c: int, cr: int):  # noqa: ANN202
        return uplift_from_counts(
            treated=t, treated_retained=tr, control=c, control_retained=cr, coupons_cost=Decimal(1)
        )

    assert uplift_note(report(5, 3, 0, 0), holdout_fraction=0.0).startswith("no control group")
    assert uplift_note(report(0, 0, 0, 0), holdout_fraction=0.1) == "no outcomes yet for both groups"
    assert uplift_note(report(5, 3, 0, 0), holdout_fraction=0.1) == "no control outcomes yet"
    assert uplift_note(report(65, 40, 11, 5), holdout_fraction=0.1) == "not significant: the 95% CI includes 0"
    assert uplift_note(report(200, 160, 200, 100), holdout_fraction=0.1) == ""


@pytest.mark.django_db
def test_churn_alerts_report_rounds_the_number_needed_to_treat_and_gives_the_cost_per_customer_saved(
    monkeypatch,  # noqa: ANN001
) -> None:
    # It printed "number needed to treat 6.217391304347824" and no cost per customer saved, which the README promises.
    import io

    from django.core.management import call_command

    from tests.customers.test_admin import _rule

    rule = _rule()
    type(rule).objects.filter(pk=rule.pk).update(holdout_fraction=0.1)
    figures = uplift_from_counts(
        treated=65, treated_retained=40, control=11, control_retained=5, coupons_cost=Decimal(650)
    )
    monkeypatch.setattr("alerts.management.commands.churn_alerts.alert_rule_uplift", lambda rule: figures)
    out = io.StringIO()

    call_command("churn_alerts", "--report", stdout=out)

    text = out.getvalue()
    assert "number needed to treat 6.2," in text, text
    assert "cost per customer saved 62.17" in text, text
    assert "not significant" in text, text
