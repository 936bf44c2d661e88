"""Evaluate the churn models on a profile file (CSV or XLSX) with the cross-validation protocol."""

from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from churnsite.cli import output_file, write_output

from ._text_models import add_text_model_arguments


class Command(BaseCommand):
    help = (
        "Cross-validate churn models on a profile file (one row per customer with a label column): "
        "stratified k-fold, shuffle, random_state=0; prints a table and optionally writes JSON."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", help="CSV or XLSX file, one row per customer")
        parser.add_argument("--label-col", required=True, help="column holding the churn label")
        parser.add_argument("--positive", required=True, help="label value that means churned")
        parser.add_argument("--id-col", default=None, help="customer id column (kept out of the features)")
        parser.add_argument("--drop-col", action="append", default=[], help="column to leave out (repeatable)")
        parser.add_argument("--dedupe", action="store_true", help="drop rows duplicating another apart from the id")
        parser.add_argument(
            "--near-duplicate-columns",
            type=int,
            default=2,
            help="look for rows equal to another in all but this many columns, and report them (default 2)",
        )
        parser.add_argument(
            "--no-near-duplicate-check", action="store_true", help="do not look for near-duplicate rows"
        )
        parser.add_argument(
            "--group-near-duplicates",
            action="store_true",
            help="keep each group of near-duplicate rows in one fold (outer and inner splits)",
        )
        parser.add_argument("--folds", type=int, default=5)
        parser.add_argument("--models", default="recency,logreg,lightgbm", help="comma-separated model names")
        parser.add_argument("--recency-col", default=None, help="days-since-last-activity column for 'recency'")
        parser.add_argument("--sheet", default=None, help="XLSX sheet name (default: the first)")
        parser.add_argument("--name", default=None, help="dataset name in the report (default: the file name)")
        parser.add_argument("--json", dest="json_path", default=None, help="write the results as JSON here")
        add_text_model_arguments(parser)
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def handle(self, *args: object, **options: object) -> None:
        from ml.evaluation import cross_validate_profile, format_report
        from ml.features import ProfileError, load_profile_file, prepare_profile

        from ._text_models import encoder_tokenizer_from_options, register_text_models_from_options

        path = Path(str(options["path"]))
        models = [m.strip() for m in str(options["models"]).split(",") if m.strip()]
        # Checked now, not after a cross-validation that may take many minutes.
        json_path = output_file(str(options["json_path"]), option="--json") if options["json_path"] else None
        if int(options["folds"]) < 2:  # type: ignore[arg-type]
            raise CommandError("--folds must be at least 2")
        near_duplicate_columns = None if options["no_near_duplicate_check"] else int(options["near_duplicate_columns"])  # type: ignore[arg-type]
        if options["group_near_duplicates"] and near_duplicate_columns is None:
            raise CommandError(
                "--group-near-duplicates needs the near-duplicate check; leave out --no-near-duplicate-check"
            )
        if near_duplicate_columns is not None and near_duplicate_columns < 0:
            raise CommandError("--near-duplicate-columns must be 0 or more")
        try:
            raw = load_profile_file(path, sheet=options["sheet"])  # type: ignore[arg-type]
            data = prepare_profile(
                raw,
                label_col=str(options["label_col"]),
                positive=str(options["positive"]),
                id_col=options["id_col"],  # type: ignore[arg-type]
                drop_cols=list(options["drop_col"]),  # type: ignore[arg-type]
                dedupe=bool(options["dedupe"]),
                name=str(options["name"] or path.stem),
            )
            text_note = register_text_models_from_options(options, models)
            report = cross_validate_profile(
                data,
                models=models,
                folds=int(options["folds"]),  # type: ignore[arg-type]
                recency_column=options["recency_col"],  # type: ignore[arg-type]
                check_tokens=encoder_tokenizer_from_options(options, models),
                progress=not options["no_progress"],
                near_duplicate_columns=near_duplicate_columns,
                group_near_duplicates=bool(options["group_near_duplicates"]),
            )
        except (ProfileError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        if text_note:
            report.notes.append(text_note)
        self.stdout.write(format_report(report))
        if json_path is not None:
            write_output(json_path, json.dumps(report.to_json(), indent=2) + "\n", option="--json")
            self.stdout.write(f"wrote {json_path}")
