"""Apply the active alert rules to the latest scores and dispatch their actions; record outcomes; report uplift."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from alerts.selectors import alert_rule_uplift, alert_rules, uplift_note
from alerts.services import alerts_apply_rules, intervention_outcomes_record


class Command(BaseCommand):
    help = (
        "Apply the active alert rules (or --rule NAME) to each customer's latest score and dispatch their actions. "
        "With the embedded defaults (eager Celery) the emails are sent before the command returns."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--rule", help="Apply only the active rule with this name.")
        parser.add_argument(
            "--outcomes", action="store_true", help="Also mark treated and control customers retained or churned."
        )
        parser.add_argument("--report", action="store_true", help="Print each rule's uplift report afterwards.")

    def handle(self, *args: object, **options: object) -> None:
        try:
            results = alerts_apply_rules(actor="system:churn_alerts", rule_name=options["rule"] or None)
        except ValidationError as error:  # the rule named by --rule has stored settings that do not validate
            problems = (
                "; ".join(f"{field}: {' '.join(messages)}" for field, messages in error.message_dict.items())
                if hasattr(error, "error_dict")
                else " ".join(error.messages)
            )
            raise CommandError(
                f"--rule {options['rule']!r}: the rule's settings are not valid ({problems}); fix them in the admin"
            ) from error
        except ValueError as error:
            raise CommandError(str(error)) from error
        if not results:
            self.stdout.write("no active alert rule")
        for result in results:
            actions = ", ".join(f"{count} {status}" for status, count in sorted(result.interventions.items())) or "none"
            self.stdout.write(
                f"{result.rule}: {result.eligible} eligible, {result.alerts_created} new alerts, actions: {actions}"
            )
        if options["outcomes"]:
            counts = intervention_outcomes_record()
            self.stdout.write(f"outcomes: {counts['retained']} retained, {counts['churned']} churned")
        if options["report"]:
            for rule in alert_rules():
                report = alert_rule_uplift(rule=rule)
                note = uplift_note(report, holdout_fraction=rule.holdout_fraction)
                if report.difference is None:
                    self.stdout.write(f"{rule.name}: {note}")
                    continue
                nnt = report.number_needed_to_treat
                self.stdout.write(
                    f"{rule.name}: retained {report.treated_rate:.1%} of {report.treated} treated vs "
                    f"{report.control_rate:.1%} of {report.control} control, difference {report.difference:+.1%} "
                    f"(95% CI {report.ci_low:+.1%} to {report.ci_high:+.1%}), coupons cost {report.coupons_cost}, "
                    f"number needed to treat {f'{nnt:.1f}' if nnt is not None else '-'}, "
                    f"cost per customer saved {report.cost_per_customer_saved or '-'}" + (f"; {note}" if note else "")
                )
