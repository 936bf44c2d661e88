"""Import customers, orders, events or messages from CSV, JSONL, JSON or xlsx; see ``--help``."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from churnsite.cli import output_file, write_output
from customers.importers import FORMATS, KINDS, ImportFileError, RowError
from customers.ingest import IMPORT_BATCH_SIZE, ImportResult, import_file, import_options_from_settings

_SHOWN_ERRORS = 20


def _field_map(pairs: list[str]) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for pair in pairs:
        name, sep, column = pair.partition("=")
        if not sep or not name.strip() or not column:
            raise CommandError(f"--map {pair!r}: write FIELD=COLUMN, e.g. --map external_id=customerID")
        mapping[name.strip()] = column
    return mapping


class Command(BaseCommand):
    help = (
        "Import rows of one kind from a file. Good rows are imported, bad rows are reported with their row "
        "number, field and reason; the command exits non-zero when any row was rejected. Re-importing the "
        "same file changes nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("kind", choices=KINDS)
        parser.add_argument("path", type=Path)
        parser.add_argument("--format", choices=FORMATS, help="default: from the file extension")
        parser.add_argument(
            "--map",
            dest="field_map",
            nargs="+",
            action="extend",
            default=[],
            metavar="FIELD=COLUMN",
            help="read a model field from a column with another name",
        )
        parser.add_argument("--label-col", help="customers: the column holding the churn label")
        parser.add_argument("--positive", help="the --label-col value that means churned (default: yes/true/1)")
        parser.add_argument(
            "--drop-col", dest="drop_columns", nargs="+", action="extend", default=[], help="columns to ignore"
        )
        parser.add_argument("--sheet", help="xlsx: the sheet to read (default: the first)")
        parser.add_argument("--delimiter", help="CSV delimiter (default: detected from the header)")
        parser.add_argument("--time-zone", help="zone of times without an offset (default: CHURN_IMPORT_TIME_ZONE)")
        parser.add_argument("--batch-size", type=int, default=IMPORT_BATCH_SIZE, help="rows per transaction")
        parser.add_argument("--dry-run", action="store_true", help="check and count everything, write nothing")
        parser.add_argument("--report", type=Path, help="write the summary and every row error to this JSON file")

    def handle(self, *args: object, **options: object) -> None:
        path: Path = options["path"]  # type: ignore[assignment]
        if not path.is_file():
            raise CommandError(f"no such file: {path}")
        if options["delimiter"] is not None and len(options["delimiter"]) != 1:  # type: ignore[arg-type]
            raise CommandError("--delimiter must be one character")
        if options["positive"] is not None and not options["label_col"]:
            raise CommandError("--positive names a value of the label column: give --label-col too")
        if int(options["batch_size"]) < 1:  # type: ignore[call-overload]
            raise CommandError("--batch-size must be at least 1")
        report_path: Path | None = options["report"]  # type: ignore[assignment]
        if report_path is not None:
            report_path = output_file(report_path, option="--report")  # checked before any row is written
        import_options = import_options_from_settings(
            kind=options["kind"],
            field_map=_field_map(options["field_map"]),  # type: ignore[arg-type]
            label_column=options["label_col"],
            positive_label=options["positive"],
            drop_columns=frozenset(options["drop_columns"]),  # type: ignore[arg-type]
            time_zone=options["time_zone"],
            format=options["format"],
            sheet=options["sheet"],
            delimiter=options["delimiter"],
        )
        with tempfile.TemporaryFile("w+", encoding="utf-8") as spool, path.open("rb") as stream:

            def keep_error(error: RowError) -> None:
                spool.write(json.dumps(error.as_dict(), ensure_ascii=False) + "\n")

            started = time.perf_counter()
            try:
                result = import_file(
                    stream=stream,
                    source=str(path),
                    options=import_options,
                    dry_run=bool(options["dry_run"]),
                    started_by="churn_import",
                    batch_size=int(options["batch_size"]),  # type: ignore[arg-type]
                    error_sink=keep_error if report_path else None,
                )
            except ImportFileError as exc:
                if report_path:
                    write_output(report_path, json.dumps({"error": str(exc)}, indent=2) + "\n", option="--report")
                raise CommandError(f"{path}: {exc}") from exc
            elapsed = time.perf_counter() - started
            if report_path:
                spool.seek(0)
                report_path.parent.mkdir(parents=True, exist_ok=True)
                with report_path.open("w", encoding="utf-8") as report:
                    summary = {**result.summary(), "seconds": round(elapsed, 3)}
                    report.write('{"summary": ' + json.dumps(summary, ensure_ascii=False) + ',\n "errors": [')
                    for number, line in enumerate(spool):
                        report.write(("\n  " if number == 0 else ",\n  ") + line.rstrip("\n"))
                    report.write("\n]}\n")
        self._print_summary(result, elapsed, report_path)
        if result.rows_rejected:
            raise CommandError(
                f"{result.rows_rejected} row(s) rejected"
                + (f"; all errors are in {report_path}" if report_path else "; pass --report PATH for all errors")
            )

    def _print_summary(self, result: ImportResult, elapsed: float, report_path: Path | None) -> None:
        verb = "would import" if result.dry_run else "imported"
        rate = result.rows_total / elapsed if elapsed > 0 else 0.0
        self.stdout.write(
            f"{result.kind} from {result.source}: {result.rows_total} rows, {verb} {result.rows_imported}, "
            f"unchanged {result.rows_unchanged}, rejected {result.rows_rejected}, "
            f"minimal customers created {result.customers_created} "
            f"({elapsed:.1f}s, {rate:,.0f} rows/s; import run {result.import_run_id})"
        )
        for note in result.notes:
            self.stdout.write(f"note: {note}")
        for error in result.errors[:_SHOWN_ERRORS]:
            self.stderr.write(f"  {error}")
        if result.rows_rejected > _SHOWN_ERRORS and not report_path:
            self.stderr.write("  ... and more; pass --report PATH to get every error")
