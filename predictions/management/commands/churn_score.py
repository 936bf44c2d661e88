"""Score every eligible customer with the champion through Celery (in the command with the embedded default)."""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError, CommandParser

from predictions.management.commands.churn_train import parse_as_of
from predictions.models import ScoringRun
from predictions.selectors import customers_signed_up
from predictions.services.scoring import ChampionUnavailable, scoring_run_start


class Command(BaseCommand):
    help = "Score every eligible customer with the champion model and store the scores."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--as-of", help="score with data up to this date (default: now)")
        parser.add_argument("--full", action="store_true", help="re-encode every text, ignoring the encoding cache")
        parser.add_argument("--wait", action="store_true", help="wait for the workers to finish and show progress")

    def handle(self, *args: object, **options: object) -> None:
        try:
            run = scoring_run_start(
                trigger="churn_score command",
                as_of=parse_as_of(options["as_of"]),  # type: ignore[arg-type]
                full=bool(options["full"]),
            )
        except (ChampionUnavailable, ValueError) as exc:  # ValueError: an as_of in the future
            raise CommandError(str(exc)) from exc
        run.refresh_from_db()
        while options["wait"] and run.status == ScoringRun.Status.RUNNING:
            self.stdout.write(f"scored {run.customers_scored} of {run.customers_total}")
            time.sleep(2)
            run.refresh_from_db()
        if run.status == ScoringRun.Status.FAILED:
            raise CommandError(f"scoring run {run.pk} failed: {run.error}")
        self.stdout.write(
            self.style.SUCCESS(
                f"scoring run {run.pk} ({run.status}) with {run.model_version.name}: "
                f"{run.customers_scored} of {run.customers_total} customers scored; "
                f"texts encoded {run.texts_encoded}, reused from the cache {run.texts_reused}"
            )
        )
        left_out = customers_signed_up(as_of=run.as_of).count() - run.customers_total
        if left_out > 0:
            self.stdout.write(
                f"{left_out} customer(s) signed up by then were not scored: flagged or marked churned, or (for a "
                "model trained on activity) without a qualifying order by then; a model trained with "
                "--labels-from flag scores customers without orders"
            )
