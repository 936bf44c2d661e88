"""Train a churn model through Celery (in the command itself with the embedded default)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from predictions.management.commands._text_models import add_nested_stacking_argument
from predictions.models import TrainingRun
from predictions.services.training import (
    EARLIEST_AS_OF,
    TRAINING_MODES,
    TrainingError,
    training_run_mark_failed,
    training_run_request,
    training_run_request_unless_running,
)


def parse_as_of(value: str | None) -> datetime | None:
    """``YYYY-MM-DD`` (midnight UTC) or an ISO 8601 time; None stays None (now). Refused before 1971 in UTC, as
    the API refuses it (the database stores times in UTC: an offset can push year 1 past the calendar)."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise CommandError(f"--as-of {value!r} is not a date (YYYY-MM-DD) or ISO 8601 time") from exc
    try:
        in_utc = parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except OverflowError as exc:
        raise CommandError(f"--as-of {value!r} is outside the calendar once in UTC") from exc
    if in_utc.year < EARLIEST_AS_OF:
        raise CommandError(f"--as-of {value!r} is before {EARLIEST_AS_OF}: there is no data that old")
    return parsed if parsed.tzinfo else in_utc


class Command(BaseCommand):
    help = "Train a churn model on the customers in the database; it is promoted only if it beats the champion."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--mode", choices=TRAINING_MODES, default=settings.CHURN_DEFAULT_MODE)
        parser.add_argument("--as-of", help="train with data up to this date (default: now)")
        parser.add_argument("--horizon-days", type=int, default=settings.CHURN_HORIZON_DAYS)
        parser.add_argument("--lead-days", type=int, default=0)
        parser.add_argument(
            "--max-cutoffs", type=int, help="most rolling training cutoffs (the newest is the holdout; default 6)"
        )
        parser.add_argument("--inner-folds", type=int, help="folds of the out-of-fold stacking (default 5)")
        parser.add_argument(
            "--keep-text",
            action="store_true",
            help="keep the text score in the model even where the features alone score better out of fold",
        )
        add_nested_stacking_argument(parser)
        parser.add_argument(
            "--labels-from",
            choices=("activity", "flag"),
            help=(
                "activity (default): churn is no order in the horizon after each cutoff (event logs); flag: profile "
                "data imported with --label-col, one snapshot per customer labelled by its churn flag"
            ),
        )
        parser.add_argument("--wait", action="store_true", help="wait for a worker to finish and show progress")
        parser.add_argument(
            "--if-idle",
            action="store_true",
            help="request nothing (and say so) when a training run is already pending or running",
        )

    def handle(self, *args: object, **options: object) -> None:
        request = training_run_request_unless_running if options["if_idle"] else training_run_request
        run = None
        try:
            # The task is enqueued when the request commits: with the embedded default it trains right there, at
            # the end of this block, and the run is known by then.
            with transaction.atomic():
                run = request(
                    mode=str(options["mode"]),
                    as_of=parse_as_of(options["as_of"]),  # type: ignore[arg-type]
                    horizon_days=int(options["horizon_days"]),  # type: ignore[arg-type]
                    lead_days=int(options["lead_days"]),  # type: ignore[arg-type]
                    options={
                        key: value
                        for key, value in (
                            ("max_training_cutoffs", options["max_cutoffs"]),
                            ("inner_folds", options["inner_folds"]),
                            ("keep_text", options["keep_text"] or None),
                            ("nested_stacking", options["nested_stacking"]),
                            ("labels_from", options["labels_from"]),
                        )
                        if value is not None
                    },
                    actor="churn_train command",
                )
        except (ValueError, TrainingError) as exc:  # TrainingError: run in-process (eager) and failed
            raise CommandError(str(exc)) from exc
        except KeyboardInterrupt:
            # Ctrl-C while the run trains in this process: no worker holds it, so nobody would ever finish it, and
            # it would block scheduled and drift retraining while it looks under way. Only KeyboardInterrupt: a
            # worker shutting down must leave its run to the broker's redelivery.
            if run is not None:
                training_run_mark_failed(training_run_id=run.pk, reason="interrupted (Ctrl-C in churn_train)")
            raise
        if run is None:
            self.stdout.write("a training run is already pending or running: nothing requested (--if-idle)")
            return
        run.refresh_from_db()
        if options["wait"]:
            run = self._wait(run)
        self._report(run)

    def _wait(self, run: TrainingRun) -> TrainingRun:
        shown = ""
        while run.status in (TrainingRun.Status.PENDING, TrainingRun.Status.RUNNING):
            line = f"{run.status}: {run.progress_percent:.0f}% {run.current_step}"
            if line != shown:
                self.stdout.write(line)
                shown = line
            time.sleep(2)
            run.refresh_from_db()
        return run

    def _report(self, run: TrainingRun) -> None:
        if run.status == TrainingRun.Status.FAILED:
            raise CommandError(f"training run {run.pk} failed: {run.error}")
        if run.status != TrainingRun.Status.SUCCEEDED:
            self.stdout.write(f"training run {run.pk} is {run.status}; a gpu worker will train it (use --wait)")
            return
        version = run.model_version
        metrics = version.metrics
        self.stdout.write(
            self.style.SUCCESS(
                f"model {version.name}: holdout ROC AUC {metrics.get('roc_auc', float('nan')):.4f}, "
                f"PR AUC {metrics.get('pr_auc', float('nan')):.4f} on {metrics.get('n')} customers; "
                f"status {version.status}"
            )
        )
        last = version.audit_entries.order_by("-at", "-id").first()
        if last is not None:
            self.stdout.write(f"promotion: {last.action} ({last.details.get('reason', '')})")
