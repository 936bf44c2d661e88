"""Backtest the churn models on the database: train on earlier cutoffs, test at --as-of."""

from __future__ import annotations

import json
from datetime import UTC, datetime, time

from django.core.management.base import BaseCommand, CommandError, CommandParser

from churnsite.cli import output_file, write_output

from ._text_models import add_text_model_arguments


class Command(BaseCommand):
    help = (
        "Time-based backtest on the customers in the database: snapshots at rolling cutoffs before --as-of "
        "train the models (labels never look past --as-of), snapshots at --as-of test them."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--as-of", required=True, help="evaluation cutoff, YYYY-MM-DD (end of that day, UTC)")
        parser.add_argument("--horizon-days", type=int, required=True, help="length of the churn window")
        parser.add_argument("--lead-days", type=int, default=0, help="days between the cutoff and the window")
        parser.add_argument(
            "--activity", choices=["orders", "orders_and_events"], default="orders", help="what counts as activity"
        )
        parser.add_argument("--max-cutoffs", type=int, default=None, help="most training cutoffs")
        parser.add_argument(
            "--max-days-inactive", type=int, default=None, help="leave out customers idle this long at a cutoff"
        )
        parser.add_argument("--models", default="recency,logreg,lightgbm", help="comma-separated model names")
        parser.add_argument("--name", default="database", help="dataset name in the report")
        parser.add_argument("--json", dest="json_path", default=None, help="write the results as JSON here")
        add_text_model_arguments(parser)
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def handle(self, *args: object, **options: object) -> None:
        from ml.evaluation import BacktestSetup, backtest, format_report
        from ml.snapshot import EligibilityRule, LabelConfig
        from predictions.selectors import customer_histories

        from ._text_models import encoder_tokenizer_from_options, register_text_models_from_options

        try:
            day = datetime.strptime(str(options["as_of"]), "%Y-%m-%d").date()
        except ValueError as exc:
            raise CommandError(f"--as-of must be a date like 2025-01-31, got {options['as_of']!r}") from exc
        # The whole day, to its last microsecond: a row at 23:59:59.5 belongs to the day, not to the label window.
        as_of = datetime.combine(day, time.max, tzinfo=UTC)
        models = [m.strip() for m in str(options["models"]).split(",") if m.strip()]
        # Checked now, not after a cross-validation that may take many minutes.
        json_path = output_file(str(options["json_path"]), option="--json") if options["json_path"] else None
        if options["max_cutoffs"] is not None and int(options["max_cutoffs"]) < 1:  # type: ignore[arg-type]
            raise CommandError("--max-cutoffs must be at least 1")
        if options["max_days_inactive"] is not None and int(options["max_days_inactive"]) < 1:  # type: ignore[arg-type]
            raise CommandError(f"--max-days-inactive must be at least 1, got {options['max_days_inactive']}")
        try:
            setup = BacktestSetup(
                as_of=as_of,
                labels=LabelConfig(
                    horizon_days=int(options["horizon_days"]),  # type: ignore[arg-type]
                    lead_days=int(options["lead_days"]),  # type: ignore[arg-type]
                    activity=str(options["activity"]),  # type: ignore[arg-type]
                ),
                eligibility=EligibilityRule(max_days_inactive=options["max_days_inactive"]),  # type: ignore[arg-type]
                max_training_cutoffs=options["max_cutoffs"],  # type: ignore[arg-type]
            )
            histories = customer_histories()
            if not histories:
                raise CommandError("the database holds no customers: import or generate some first")
            text_note = register_text_models_from_options(options, models)
            report = backtest(
                histories,
                setup,
                models=models,
                dataset=str(options["name"]),
                check_tokens=encoder_tokenizer_from_options(options, models),
                progress=not options["no_progress"],
            )
        except (ValueError, OverflowError) as exc:  # OverflowError: dates past year 9999 (--as-of plus a horizon)
            raise CommandError(str(exc)) from exc
        if text_note:
            report.notes.append(text_note)
        self.stdout.write(format_report(report))
        if json_path is not None:
            write_output(json_path, json.dumps(report.to_json(), indent=2) + "\n", option="--json")
            self.stdout.write(f"wrote {json_path}")
