"""Generate the demo store: customers, orders, browsing events and support conversations (see README "Demo data")."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from churnsite.cli import output_file
from customers.generator import SUPPORTED_LANGUAGES
from customers.selectors import demo_customers
from customers.services import DemoDataExistsError, demo_store_generate


def _end_date(value: str) -> datetime:
    try:
        day = date.fromisoformat(value)
    except ValueError as error:
        raise CommandError(f"--end must be a date YYYY-MM-DD, got {value!r}") from error
    end = datetime(day.year, day.month, day.day, tzinfo=UTC)
    # A store in the future has no activity up to now: training and scoring, which read data up to their as_of,
    # would find nothing (and the simulation, which runs past the end, would leave the calendar near year 9999).
    # Activity up to the end of tomorrow's history would be up to a day ahead of now: more than the importer
    # accepts (CHURN_IMPORT_FUTURE_TOLERANCE_SECONDS), so the generator does not write it either.
    latest = timezone.now() + timedelta(seconds=settings.CHURN_IMPORT_FUTURE_TOLERANCE_SECONDS)
    if end > latest:
        raise CommandError(
            f"--end {value} is in the future: the history ends at --end (midnight UTC, default today), and activity "
            f"after {latest:%Y-%m-%d %H:%M} UTC would be more than CHURN_IMPORT_FUTURE_TOLERANCE_SECONDS ahead of now"
        )
    return end


class Command(BaseCommand):
    help = (
        "Simulate a realistic e-commerce store with a hidden churn mechanism and store it. The history covers "
        "the --days days before --end (midnight UTC; default: today). Deterministic for a --seed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--customers", type=int, default=2000, help="number of customers (default 2000)")
        parser.add_argument("--days", type=int, default=365, help="length of the history in days (default 365)")
        parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
        parser.add_argument("--end", default="", help="end of the history, YYYY-MM-DD, exclusive (default: today)")
        parser.add_argument(
            "--languages",
            default="en",
            help=f"comma-separated languages customers write in, from {','.join(SUPPORTED_LANGUAGES)} (default en)",
        )
        existing = parser.add_mutually_exclusive_group()
        existing.add_argument(
            "--replace",
            action="store_true",
            help="delete earlier demo data first (refused while retention actions were sent to demo customers)",
        )
        existing.add_argument(
            "--if-absent",
            action="store_true",
            help="generate only when no demo customers are stored; otherwise say so and do nothing",
        )
        parser.add_argument(
            "--delete-sent-interventions",
            action="store_true",
            help="with --replace: also delete the alerts and retention actions sent to demo customers",
        )
        parser.add_argument(
            "--truth-file",
            default="",
            help="also write the hidden propensities to this CSV (for debugging; never read by the model)",
        )
        parser.add_argument(
            "--incident-churn",
            action="store_true",
            help="also simulate churners who leave abruptly weeks after an angry, unresolved complaint",
        )

    def handle(self, *args: object, **options: object) -> None:
        languages = tuple(part.strip() for part in str(options["languages"]).split(",") if part.strip())
        unknown = sorted(set(languages) - set(SUPPORTED_LANGUAGES))
        if unknown or not languages:
            raise CommandError(f"--languages: unsupported {unknown or 'empty list'}; choose from {SUPPORTED_LANGUAGES}")
        customers, days = int(options["customers"]), int(options["days"])
        if customers < 1:
            raise CommandError(f"--customers must be at least 1, got {customers}")
        if days < 1:
            raise CommandError(f"--days must be at least 1, got {days}")
        end = _end_date(str(options["end"])) if options["end"] else None
        start_year = (end or datetime.now(UTC)).year - days / 365.25
        if start_year < 1971:  # the history must fit the calendar (and start after the epoch)
            raise CommandError(f"--days {days} reaches back to before 1971 from the end of the history; choose fewer")
        if int(options["seed"]) < 0:  # type: ignore[call-overload]
            raise CommandError(f"--seed must be 0 or more, got {options['seed']}")
        # Checked now, not after generating the whole store.
        truth_path = output_file(str(options["truth_file"]), option="--truth-file") if options["truth_file"] else None
        if options["delete_sent_interventions"] and not options["replace"]:
            raise CommandError("--delete-sent-interventions goes with --replace")
        if options["if_absent"] and (stored := demo_customers().count()):
            self.stdout.write(f"{stored} demo customers are already stored: nothing generated (--if-absent)")
            return
        if options["replace"] and not options["delete_sent_interventions"]:
            self._refuse_replacing_sent_interventions()
        started = time.perf_counter()
        try:
            summary = demo_store_generate(
                customers=customers,
                days=days,
                seed=int(options["seed"]),
                languages=languages,
                end=end,
                replace=bool(options["replace"]),
                truth_path=truth_path,
                incident_churn=bool(options["incident_churn"]),
            )
        except DemoDataExistsError as error:
            raise CommandError(str(error)) from error
        except OSError as error:
            if truth_path is None:
                raise
            # The truth file is written last, inside the transaction: nothing was stored.
            raise CommandError(f"--truth-file {truth_path}: {error.strerror or error}") from error
        elapsed = time.perf_counter() - started
        # The demo acts on its scores: one active example alert rule (customers does not depend on alerts).
        from alerts.services import alert_rule_ensure_example

        rule = alert_rule_ensure_example()
        self.stdout.write(f"alert rule ready: {rule.name}")
        replaced = f" (replaced {summary.replaced_customers} demo customers)" if summary.replaced_customers else ""
        self.stdout.write(
            self.style.SUCCESS(
                f"generated {summary.customers} customers, {summary.orders} orders, {summary.events} events and "
                f"{summary.messages} messages from {summary.start:%Y-%m-%d} to {summary.end:%Y-%m-%d} "
                f"(seed {summary.seed}) in {elapsed:.1f}s{replaced}"
            )
        )

    def _refuse_replacing_sent_interventions(self) -> None:
        """Replacing deletes the demo customers and, with them, their alerts and retention actions: the audit trail
        of the coupons sent, whose addresses the new store reuses (so a rescoring would email them again)."""
        from alerts.selectors import interventions_that_may_have_reached

        sent = interventions_that_may_have_reached(customers=demo_customers())
        if sent.exists():
            raise CommandError(
                f"--replace would delete {sent.count()} retention actions sent (or pending, or of unknown delivery) to "
                f"{sent.values('customer_id').distinct().count()} demo customers (their audit trail), and the "
                "regenerated customers would be contacted again; add --delete-sent-interventions to delete them "
                "anyway, or use --if-absent to keep the stored store"
            )
