"""Reading import files as a stream of rows and turning each row into clean field values or row errors.

Nothing here writes to the database: ``customers.services.import_file`` drives these readers and
parsers batch by batch. Everything streams: a reader holds one row (and one line of CSV) at a time,
and the only state that grows with a file is ``FileKeys``, eight bytes a row.

Rows are numbered as a person looking at the file would find them: the line in a CSV or JSONL file
(the CSV header is line 1, so the first data row is row 2; a quoted field spanning lines counts
from the line where the row starts), the sheet row in an xlsx workbook, and the element number
(from 1) in a JSON array.
"""

from __future__ import annotations

import bisect
import codecs
import csv
import hashlib
import io
import itertools
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import BinaryIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

__all__ = [
    "FORMATS",
    "KINDS",
    "FileKeys",
    "ImportFileError",
    "ImportOptions",
    "ParsedRow",
    "RecordStream",
    "RowError",
    "PreparedRow",
    "PreparedRows",
    "RowParser",
    "assign_external_ids",
    "detect_format",
    "open_records",
]

FORMATS = ("csv", "jsonl", "json", "xlsx")
KINDS = ("customers", "orders", "events", "messages")
_EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".xlsx": "xlsx",
    ".xlsm": "xlsx",
}
_DELIMITERS = (",", ";", "\t", "|")
# A runaway quoted field stops here instead of swallowing the rest of a large file into memory.
_CSV_FIELD_CAP = 64 * 1024 * 1024
_CHUNK_BYTES = 1 << 20  # read at a time from a UTF-8 or cp1252 file
_TEXT_CHUNK_LINES = 4096  # lines read at a time from a UTF-16 file


class ImportFileError(Exception):
    """The file as a whole cannot be read (empty, wrong format, a required column missing): nothing is imported.

    ``option`` names the import option at fault (``map``, ``label_col``, ``time_zone``, ``delimiter``, ``sheet``,
    ``format``) when the error is about one, so that the API can name it."""

    def __init__(self, message: str, *, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option


@dataclass(frozen=True)
class RowError:
    """One rejected row: where it is in the file, which field is wrong (``*`` for the whole row), and why."""

    row: int
    field: str
    reason: str

    def as_dict(self) -> dict[str, object]:
        return {"row": self.row, "field": storable_text(self.field), "reason": storable_text(self.reason)}

    def __str__(self) -> str:
        return f"row {self.row}, {storable_text(self.field)}: {storable_text(self.reason)}"


def storable_text(text: str) -> str:
    """``text`` with what no database text or JSON column can hold written out as escapes: NUL characters and
    unpaired surrogates (a rejected row's field name or value may carry them, and the error is stored)."""
    if text.isascii() and "\x00" not in text:
        return text
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


@dataclass(frozen=True)
class ImportOptions:
    """How to read and interpret the rows of one import.

    Attributes:
        kind: what the rows are: customers, orders, events or messages.
        field_map: model field -> column name, overriding the built-in column names (``--map``).
        label_column: for customers, the column that holds the churn label (``--label-col``).
        positive_label: the value of ``label_column`` that means churned (``--positive``); without it the
            label is read as a boolean (yes/no, true/false, 1/0).
        drop_columns: columns to ignore entirely (``--drop-col``), e.g. another model's leaked output.
        time_zone: IANA zone in which times without an offset are read; everything is stored in UTC.
        max_text_chars: longest accepted text value (message text, attribute and property values).
        future_tolerance: how far past ``now`` a timestamp may lie (clock skew) before it is rejected.
        now: the reference time for the future check; the import's start when None.
        format: csv, jsonl, json or xlsx; detected from the file name when None.
        sheet: the xlsx sheet to read; the first sheet when None.
        delimiter: the CSV delimiter; detected from the header line when None.
        currency: the store's currency (``CHURN_CURRENCY``): orders without one are in it, and an order in another
            currency is converted to it with ``exchange_rates`` or refused. None accepts any currency as given.
        exchange_rates: the value of one unit of another currency in the store's currency (``CHURN_EXCHANGE_RATES``).
    """

    kind: str
    field_map: Mapping[str, str] = field(default_factory=dict)
    label_column: str | None = None
    positive_label: str | None = None
    drop_columns: frozenset[str] = frozenset()
    time_zone: str = "UTC"
    max_text_chars: int = 1_000_000
    future_tolerance: timedelta = timedelta(hours=1)
    now: datetime | None = None
    format: str | None = None
    sheet: str | None = None
    delimiter: str | None = None
    currency: str | None = None
    exchange_rates: Mapping[str, Decimal] = field(default_factory=dict)


def detect_format(name: str) -> str:
    """The import format for a file name, from its extension."""
    lowered = name.lower()
    for extension, fmt in _EXTENSIONS.items():
        if lowered.endswith(extension):
            return fmt
    raise ImportFileError(
        f"cannot tell the format of {name!r} from its extension; pass --format ({', '.join(FORMATS)})"
    )


# --- Reading: bytes -> (row number, record) ---------------------------------------------------------------------


@dataclass
class RecordStream:
    """The records of one file: ``columns`` (None for JSON, whose keys vary by row), the records, and notes.

    ``records`` yields ``(row, dict)`` pairs, or ``RowError`` for a row that could not even be read.
    ``notes`` fills while the records are read (e.g. lines decoded as cp1252) and is complete at the end.
    """

    columns: list[str] | None
    records: Iterator[tuple[int, dict[str, object]] | RowError]
    notes: list[str]


def _c1_controls(error: UnicodeError) -> tuple[str, int]:
    # The five bytes cp1252 leaves undefined map to the same code points, as browsers decode windows-1252.
    assert isinstance(error, UnicodeDecodeError)
    return "".join(chr(byte) for byte in error.object[error.start : error.end]), error.end


codecs.register_error("churn_c1_controls", _c1_controls)


def _undecodable(error: UnicodeError) -> tuple[str, int]:
    # Bytes that do not decode (a broken UTF-16 pair, stray bytes in a UTF-8 JSON document) become lone
    # surrogates: the field check then refuses that row and field, and the rest of the file still imports.
    assert isinstance(error, UnicodeDecodeError)
    return "\udcff" * (error.end - error.start), error.end


codecs.register_error("churn_undecodable", _undecodable)


def _sniff_encoding(head: bytes) -> tuple[str, int]:
    """(encoding, bytes to skip) from a byte-order mark, or from the NUL pattern of BOM-less UTF-16."""
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8", 3
    if head.startswith(codecs.BOM_UTF16_LE):
        return "utf-16-le", 2
    if head.startswith(codecs.BOM_UTF16_BE):
        return "utf-16-be", 2
    sample = head[:64]
    if len(sample) >= 4 and sample[1::2].count(0) >= len(sample) // 2 * 0.9 and sample[0::2].count(0) == 0:
        return "utf-16-le", 0
    if len(sample) >= 4 and sample[0::2].count(0) >= len(sample) // 2 * 0.9 and sample[1::2].count(0) == 0:
        return "utf-16-be", 0
    return "utf-8", 0


class _LineSource:
    """Decoded lines of a seekable binary file, each with its newline, and a way back to any line.

    Read a megabyte at a time rather than line by line: each read from the file lets another thread
    take the GIL, and the import's writer thread then holds it for up to the switch interval; and
    whole chunks decode, split and feed the CSV reader in C. ``lines_from(n)`` starts at line ``n``
    (from 1), also again after a broken row, from the position remembered for the start of its chunk.
    UTF-8 lines that do not decode are read as cp1252 (and counted, for a note). UTF-16 goes through
    a text wrapper, since its newlines are two bytes.
    """

    def __init__(self, raw: BinaryIO, encoding: str, start: int) -> None:
        self.raw = raw
        self.cp1252_lines = 0
        self._decoded_to = 0  # the last line number decoded so far
        raw.seek(start)
        utf16 = encoding.startswith("utf-16")
        self.text = io.TextIOWrapper(raw, encoding=encoding, newline="", errors="churn_undecodable") if utf16 else None
        # line number of the first line of each chunk read so far, and where it starts (a byte offset, or a
        # position of the text wrapper)
        self._mark_lines = [1]
        self._mark_positions = [start if self.text is None else self.text.tell()]

    def lines_from(self, line_no: int) -> Iterator[str]:
        index = bisect.bisect_right(self._mark_lines, line_no) - 1
        first = self._mark_lines[index]
        lines = itertools.chain.from_iterable(self._chunks(first, self._mark_positions[index]))
        return itertools.islice(lines, line_no - first, None) if line_no > first else lines

    def _mark(self, line_no: int, position: int) -> None:
        if line_no > self._mark_lines[-1]:
            self._mark_lines.append(line_no)
            self._mark_positions.append(position)

    def _chunks(self, line_no: int, position: int) -> Iterator[Iterable[str]]:
        if self.text is not None:
            yield from self._text_chunks(line_no, position)
            return
        raw = self.raw
        raw.seek(position)
        pending = b""
        while data := raw.read(_CHUNK_BYTES):
            data = pending + data
            cut = data.rfind(b"\n") + 1
            if not cut:  # a line longer than the chunk
                pending = data
                continue
            pending = data[cut:]
            self._mark(line_no, position)
            yield self._decode(data[:cut], line_no)
            line_no += data.count(b"\n", 0, cut)
            position += cut
        if pending:
            self._mark(line_no, position)
            yield self._decode(pending, line_no)

    def _decode(self, data: bytes, line_no: int) -> Iterable[str]:
        try:
            return io.StringIO(data.decode("utf-8"), newline="\n")  # lines end at \n only, which they keep
        except UnicodeDecodeError:
            pass
        parts = data.split(b"\n")
        last = parts.pop()
        lines = [part + b"\n" for part in parts] + ([last] if last else [])
        decoded = []
        for number, line in enumerate(lines, start=line_no):
            try:
                decoded.append(line.decode("utf-8"))
            except UnicodeDecodeError:
                decoded.append(line.decode("cp1252", errors="churn_c1_controls"))
                if number > self._decoded_to:  # not counted yet (lines read again after a broken row are)
                    self.cp1252_lines += 1
        self._decoded_to = max(self._decoded_to, line_no + len(lines) - 1)
        return decoded

    def _text_chunks(self, line_no: int, position: int) -> Iterator[list[str]]:
        text = self.text
        assert text is not None
        text.seek(position)
        while True:
            self._mark(line_no, text.tell())
            lines = []
            while len(lines) < _TEXT_CHUNK_LINES and (line := text.readline()):
                lines.append(line)
            if not lines:
                return
            yield lines
            line_no += len(lines)


def _detect_delimiter(header_line: str) -> str:
    counts = {delimiter: header_line.count(delimiter) for delimiter in _DELIMITERS}
    best = max(_DELIMITERS, key=lambda delimiter: counts[delimiter])
    return best if counts[best] > 0 else ","


def _clean_header(names: Sequence[object]) -> list[str]:
    header = ["" if name is None else str(name).strip() for name in names]
    while header and header[-1] == "":
        header.pop()
    if not header:
        raise ImportFileError("the first row is empty: the header (the column names) must be the first row")
    seen: set[str] = set()
    for position, name in enumerate(header, start=1):
        if not name:
            raise ImportFileError(f"header column {position} has no name")
        if name in seen:
            raise ImportFileError(f"header column {name!r} appears twice")
        seen.add(name)
    return header


def _csv_records(raw: BinaryIO, *, delimiter: str | None, max_text_chars: int, notes: list[str]) -> RecordStream:
    head = raw.read(4096)
    if not head.strip(b" \t\r\n\x00" + codecs.BOM_UTF8 + codecs.BOM_UTF16_LE + codecs.BOM_UTF16_BE):
        raise ImportFileError("the file is empty")
    if delimiter is not None and (len(delimiter) != 1 or delimiter in '"\r\n'):
        raise ImportFileError(
            f"the delimiter must be one character, not a quote or a line break; got {delimiter!r}", option="delimiter"
        )
    encoding, skip = _sniff_encoding(head)
    if skip and encoding == "utf-8":
        notes.append("UTF-8 byte-order mark removed")
    elif encoding.startswith("utf-16"):
        notes.append(f"decoded as {encoding.upper()}")
    source = _LineSource(raw, encoding, skip)
    lines = source.lines_from(1)
    header_line = next(lines, "")
    if "\r" in header_line.rstrip("\r\n"):
        raise ImportFileError(
            "the file's lines end with a carriage return only (the old Mac format); save it with CRLF or LF line "
            "endings (any editor or spreadsheet's CSV export does) and import it again"
        )
    if delimiter is None:
        delimiter = _detect_delimiter(header_line)
        if delimiter != ",":
            notes.append(f"delimiter detected: {delimiter!r}")
    csv.field_size_limit(max(csv.field_size_limit(), max_text_chars + 1, _CSV_FIELD_CAP))
    try:
        header = _clean_header(next(csv.reader([header_line], delimiter=delimiter, strict=True), []))
    except csv.Error as exc:
        raise ImportFileError(f"the header line is not valid CSV: {exc}") from exc
    columns = len(header)

    def records() -> Iterator[tuple[int, dict[str, object]] | RowError]:
        rows = lines
        reader = csv.reader(rows, delimiter=delimiter, strict=True)
        before = 1  # lines read before this reader: the header
        while True:
            start = before + reader.line_num + 1
            try:
                values = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                spanned = before + reader.line_num > start or "end of data" in str(exc)
                hint = " (an unbalanced quote?)" if spanned or '"' in str(exc) else ""
                yield RowError(start, "*", f"malformed CSV: {exc}{hint}")
                if spanned:
                    # The quote swallowed the lines after it: read them again as rows of their own.
                    rows, before = source.lines_from(start + 1), start
                else:
                    before += reader.line_num
                reader = csv.reader(rows, delimiter=delimiter, strict=True)
                continue
            if not any(value.strip() for value in values):  # a blank line, or only delimiters (",,"): no row
                continue
            if len(values) > columns and not any(value.strip() for value in values[columns:]):
                values = values[:columns]  # empty fields after the last column: a trailing delimiter
            if len(values) != columns:
                yield RowError(
                    start,
                    "*",
                    f"has {len(values)} fields but the header has {columns}"
                    + (" (wrong delimiter?)" if len(values) == 1 else " (an unbalanced quote or a stray delimiter?)"),
                )
                if before + reader.line_num > start:
                    # A quote that closed lines later made one row of several: read those lines again.
                    rows, before = source.lines_from(start + 1), start
                    reader = csv.reader(rows, delimiter=delimiter, strict=True)
                continue
            yield start, dict(zip(header, values, strict=True))
        if source.cp1252_lines:
            notes.append(f"{source.cp1252_lines} line(s) were not valid UTF-8 and were decoded as cp1252")

    if columns == 1 and any(candidate in header[0] for candidate in _DELIMITERS if candidate != delimiter):
        notes.append(f"the header has a single column {header[0]!r}: is the delimiter {delimiter!r} right?")
    return RecordStream(columns=header, records=records(), notes=notes)


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON (use null for a missing value)")


def _jsonl_records(raw: BinaryIO, notes: list[str]) -> RecordStream:
    head = raw.read(4096)
    encoding, skip = _sniff_encoding(head)
    source = _LineSource(raw, encoding, skip)
    decoder = json.JSONDecoder(parse_constant=_reject_constant)
    if not head.strip(b" \t\r\n\x00" + codecs.BOM_UTF8 + codecs.BOM_UTF16_LE + codecs.BOM_UTF16_BE):
        raise ImportFileError("the file is empty")

    def records() -> Iterator[tuple[int, dict[str, object]] | RowError]:
        for line_no, line in enumerate(source.lines_from(1), start=1):
            text = line.strip()
            if not text:
                continue
            try:
                record = decoder.decode(text)
            except ValueError as exc:
                yield RowError(line_no, "*", f"invalid JSON: {exc}")
                continue
            except RecursionError:
                yield RowError(line_no, "*", "invalid JSON: nested too deeply")
                continue
            if not isinstance(record, dict):
                yield RowError(line_no, "*", f"each line must be a JSON object, found {_json_kind(record)}")
                continue
            yield line_no, record

    return RecordStream(columns=None, records=records(), notes=notes)


def _json_kind(value: object) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


def _json_array_records(raw: BinaryIO, notes: list[str]) -> RecordStream:
    """Stream the elements of a top-level JSON array without loading the whole document."""
    head = raw.read(4096)
    encoding, skip = _sniff_encoding(head)
    raw.seek(skip)
    text = io.TextIOWrapper(raw, encoding=encoding, errors="churn_undecodable")
    decoder = json.JSONDecoder(parse_constant=_reject_constant)
    state = {"buf": "", "pos": 0, "eof": False}

    def fill(at_least: int = 65536) -> bool:
        if state["eof"]:
            return False
        try:
            chunk = text.read(max(at_least, 65536))
        except UnicodeDecodeError as exc:
            raise ImportFileError(f"the JSON is not valid {encoding}: {exc.reason}") from exc
        if not chunk:
            state["eof"] = True
            return False
        buf, pos = state["buf"], state["pos"]
        state["buf"], state["pos"] = buf[pos:] + chunk, 0
        return True

    def skip_space() -> str:
        while True:
            buf, pos = state["buf"], state["pos"]
            while pos < len(buf) and buf[pos] in " \t\r\n":
                pos += 1
            state["pos"] = pos
            if pos < len(buf):
                return buf[pos]
            if not fill():
                return ""

    first = skip_space()
    if first == "":
        raise ImportFileError("the file is empty")
    if first != "[":
        try:
            found = _json_kind(decoder.raw_decode(state["buf"], state["pos"])[0])
        except (ValueError, RecursionError):
            found = f"{first!r}"
        raise ImportFileError(f"the JSON top level must be an array of objects, found {found}")
    state["pos"] += 1

    def records() -> Iterator[tuple[int, dict[str, object]] | RowError]:
        index = 0
        while True:
            char = skip_space()
            if char == "]":
                state["pos"] += 1
                if skip_space() != "":
                    yield RowError(index + 1, "*", "unexpected data after the closing ] of the array")
                return
            if index > 0:
                if char != ",":
                    yield RowError(index + 1, "*", "invalid JSON: expected ',' or ']'; the rest cannot be read")
                    return
                state["pos"] += 1
                skip_space()
            elif char == "":
                yield RowError(1, "*", "invalid JSON: the array is never closed")
                return
            index += 1
            while True:
                buf, pos = state["buf"], state["pos"]
                try:
                    value, end = decoder.raw_decode(buf, pos)
                except json.JSONDecodeError as exc:
                    if fill(len(buf) - pos):  # maybe the element goes on in the next chunk
                        continue
                    # exc.msg alone read "Unterminated string starting at"; its line and column count from the
                    # start of the read buffer, not the file, so the position is given within the element.
                    reason = exc.msg.removesuffix(" at").removesuffix(" starting")
                    where = f"character {exc.pos - pos + 1} of the element"
                    yield RowError(index, "*", f"invalid JSON: {reason} ({where}); the rest of the file cannot be read")
                    return
                except ValueError as exc:  # NaN / Infinity
                    yield RowError(index, "*", f"invalid JSON: {exc}; the rest of the file cannot be read")
                    return
                except RecursionError:
                    yield RowError(index, "*", "invalid JSON: nested too deeply; the rest of the file cannot be read")
                    return
                if end >= len(buf) and fill(len(buf) - pos):  # a number cut at the chunk end
                    continue
                state["pos"] = end
                break
            if not isinstance(value, dict):
                yield RowError(index, "*", f"each element must be a JSON object, found {_json_kind(value)}")
                continue
            yield index, value

    return RecordStream(columns=None, records=records(), notes=notes)


def _xlsx_records(raw: BinaryIO, *, sheet: str | None, notes: list[str]) -> RecordStream:
    import zipfile

    from openpyxl import load_workbook

    try:
        workbook = load_workbook(raw, read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
        raise ImportFileError(f"not a readable xlsx workbook: {exc}") from exc
    if sheet is None:
        worksheet = workbook.worksheets[0]
    elif sheet in workbook.sheetnames:
        worksheet = workbook[sheet]
    else:
        raise ImportFileError(
            f"no sheet {sheet!r}; the workbook has {', '.join(map(repr, workbook.sheetnames))}", option="sheet"
        )
    rows = worksheet.iter_rows(values_only=True)
    try:
        first = next(rows, None)
    except Exception as exc:  # noqa: BLE001 - a damaged sheet: XML, zip or I/O errors, whatever the parser
        raise ImportFileError(f"sheet {worksheet.title!r} cannot be read: {type(exc).__name__}: {exc}") from exc
    if first is None:
        raise ImportFileError(f"sheet {worksheet.title!r} is empty")
    header = _clean_header(first)

    def records() -> Iterator[tuple[int, dict[str, object]] | RowError]:
        number = 1
        try:
            for number, values in enumerate(rows, start=2):  # noqa: B007 - the last number read is reported
                if all(value is None or (isinstance(value, str) and not value.strip()) for value in values):
                    continue
                extra = [value for value in values[len(header) :] if value is not None and value != ""]
                if extra:
                    yield RowError(
                        number, "*", f"has {len(header) + len(extra)} or more cells but the header has {len(header)}"
                    )
                    continue
                yield number, {name: (values[i] if i < len(values) else None) for i, name in enumerate(header)}
        except Exception as exc:  # noqa: BLE001 - a sheet damaged part way (truncated XML): keep what was read
            yield RowError(
                number + 1,
                "*",
                f"the sheet cannot be read from this row on ({type(exc).__name__}: {exc}); "
                "no row after it was imported: repair the file and import it again",
            )
        finally:
            workbook.close()

    return RecordStream(columns=header, records=records(), notes=notes)


def open_records(raw: BinaryIO, *, options: ImportOptions, name: str = "") -> RecordStream:
    """Open a seekable binary stream as a stream of records.

    Raises:
        ImportFileError: when the file as a whole cannot be read.
    """
    fmt = options.format or detect_format(name)
    if fmt not in FORMATS:
        raise ImportFileError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}", option="format")
    # Options of another format were silently ignored: a sheet named for a CSV read the CSV, a delimiter for JSON
    # read the JSON, and a workbook sent as CSV failed on its "line endings".
    if options.sheet is not None and fmt != "xlsx":
        raise ImportFileError(f"--sheet only applies to xlsx files, and this one is read as {fmt}", option="sheet")
    if options.delimiter is not None and fmt != "csv":
        raise ImportFileError(f"--delimiter only applies to CSV, and this file is read as {fmt}", option="delimiter")
    start = raw.tell()
    if fmt != "xlsx" and raw.read(4) == b"PK\x03\x04":
        raise ImportFileError(
            f"this file is a zip archive, as an xlsx workbook is, not {fmt}; read it as xlsx", option="format"
        )
    raw.seek(start)
    notes: list[str] = []
    if fmt == "csv":
        return _csv_records(raw, delimiter=options.delimiter, max_text_chars=options.max_text_chars, notes=notes)
    if fmt == "jsonl":
        return _jsonl_records(raw, notes)
    if fmt == "json":
        return _json_array_records(raw, notes)
    return _xlsx_records(raw, sheet=options.sheet, notes=notes)


# --- Parsing: record -> clean field values ----------------------------------------------------------------------


class _FieldError(ValueError):
    """A value that cannot be stored; the message says why, the caller adds the row and field."""


_EMPTY = ("", None)
_INT = re.compile(r"[+-]?(0|[1-9][0-9]*)")
_FLOAT = re.compile(r"[+-]?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")


def text_as_number(text: str) -> int | float | None:
    """The number a free attribute written as ``text`` (already stripped) is stored as, or ``None`` when it stays
    text: a leading ``+`` (a phone number, +14155551234, would lose its sign and format) or a leading zero (a zip
    or branch code, 02134 or 007) keeps it text, as does anything not finite."""
    if text.startswith("+"):
        return None
    if _INT.fullmatch(text) and (text.lstrip("-") == "0" or not text.lstrip("-").startswith("0")):
        return int(text)
    if _FLOAT.fullmatch(text):
        number = float(text)
        if math.isfinite(number):
            return number
    return None


_EPOCH = re.compile(r"[+-]?[0-9]+(\.[0-9]+)?")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")
_SURROGATE = re.compile("[\ud800-\udfff]")
_CURRENCY = re.compile(r"[A-Z]{3}")
# At most 12 digits before the point (so below the limit) and at most two after: no checks left but the sign.
_PLAIN_MONEY = re.compile(r"[+-]?[0-9]{1,12}(\.[0-9]{1,2})?")
_CENT = Decimal("0.01")
_MONEY_LIMIT = Decimal(10) ** 12
_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f"}


def _as_text(value: object) -> str:
    if type(value) is str:
        return value
    if isinstance(value, dict | list | bool):
        raise _FieldError(f"is {_json_kind(value)}, not text")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def _check_text(text: str, limit: int) -> str:
    if "\x00" in text:
        raise _FieldError("contains a NUL byte (\\x00), which the database cannot store")
    if not text.isascii() and _SURROGATE.search(text):
        raise _FieldError(
            "contains text that is not valid Unicode (an unpaired surrogate: a broken \\ud83d-style escape, or "
            "bytes that do not decode), which cannot be stored"
        )
    if len(text) > limit:
        raise _FieldError(f"is {len(text):,} characters long; the limit is {limit:,}")
    return text


@dataclass(frozen=True)
class _Context:
    tz: ZoneInfo
    latest: datetime
    max_text_chars: int


def _text(max_length: int | None = None, *, strip: bool = True) -> Callable[[object, _Context], str]:
    def parse(value: object, context: _Context) -> str:
        if type(value) is str:  # the common case, checked inline
            text = value.strip() if strip else value
            if (
                len(text) <= (max_length or context.max_text_chars)
                and "\x00" not in text
                and (text.isascii() or not _SURROGATE.search(text))
            ):
                return text
        text = _as_text(value)
        if strip:
            text = text.strip()
        return _check_text(text, max_length or context.max_text_chars)

    return parse


def _email(value: object, context: _Context) -> str:
    text = _check_text(_as_text(value).strip(), 254)
    if text and not _EMAIL.fullmatch(text):
        raise _FieldError(f"{text!r} is not an email address")
    return text


def _choice(choices: Sequence[str]) -> Callable[[object, _Context], str]:
    def parse(value: object, context: _Context) -> str:
        text = _as_text(value).strip().lower()
        if text not in choices:
            raise _FieldError(f"{_as_text(value)!r} is not one of {', '.join(choices)}")
        return text

    return parse


def _currency(value: object, context: _Context) -> str:
    text = _as_text(value).strip().upper()
    if not _CURRENCY.fullmatch(text):
        raise _FieldError(f"{_as_text(value)!r} is not a three-letter currency code")
    return text


def _boolean(value: object, context: _Context) -> bool:
    if isinstance(value, bool):
        return value
    text = _as_text(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise _FieldError(f"{_as_text(value)!r} is not a yes/no value")


def _count(value: object, context: _Context) -> int:
    text = _as_text(value).strip()
    if not _INT.fullmatch(text) or int(text) < 0 or int(text) > 2_147_483_647:
        raise _FieldError(f"{text!r} is not a whole number of 0 or more")
    return int(text)


def _money(value: object, context: _Context) -> Decimal:
    if type(value) is str and _PLAIN_MONEY.fullmatch(value):  # the common case: digits with up to two decimals
        return Decimal(value) if value[-3:-2] == "." else Decimal(value).quantize(_CENT)
    if isinstance(value, bool):
        raise _FieldError(f"{value!r} is not an amount")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _FieldError(f"{value!r} is not a number")
        text = repr(value)
    else:
        text = _as_text(value).strip()
    if "," in text:
        raise _FieldError(
            f"{text!r} contains a comma: write amounts as plain decimals such as 1000.00 "
            "(thousands separators and decimal commas are ambiguous)"
        )
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise _FieldError(f"{text!r} is not a number") from None
    if not amount.is_finite():
        raise _FieldError(f"{text!r} is not a number")
    if amount != amount.quantize(_CENT):
        raise _FieldError(f"{text!r} has more than two decimal places")
    if abs(amount) >= _MONEY_LIMIT:
        raise _FieldError(f"{text!r} is too large")
    return amount.quantize(_CENT)


def _non_negative_money(value: object, context: _Context) -> Decimal:
    amount = _money(value, context)
    if amount < 0:
        raise _FieldError(f"{amount} is negative")
    return amount


def _timestamp(value: object, context: _Context) -> datetime:
    """ISO 8601 (with or without offset), YYYYMMDD, or epoch seconds; naive times are in the import's zone. A
    date without a time is the day's first instant there (01:00 on a day whose midnight the clocks skipped)."""
    if type(value) is str:
        moment = _timestamp_text(value.strip())
    elif isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        # A number gets the rules of the same digits as text (a JSON number, a spreadsheet cell): 20240301 is
        # YYYYMMDD, 9 digits or more are epoch seconds, and 2024 or a spreadsheet day such as 45292 is refused.
        if isinstance(value, float) and not math.isfinite(value):
            raise _FieldError(f"{value!r} is not a time")
        if float(value).is_integer():
            moment = _timestamp_text(str(int(value)))
        elif abs(value) >= 1e8:
            moment = _from_epoch(value)
        else:
            raise _FieldError(f"{value!r} is not a date: use ISO 8601, YYYYMMDD or epoch seconds")
    else:
        moment = _timestamp_text(_as_text(value).strip())
    if moment.tzinfo is None:
        local = moment
        # A skipped midnight (clocks going forward at 00:00, as in Cairo or Santiago) of a date without a time: its
        # offset before the change (fold 0) gives the moment the clocks jumped, the day's first instant.
        moment = moment.replace(tzinfo=context.tz)
        if (
            context.tz.key not in _ZONES_WITHOUT_CLOCK_CHANGES
            and _skipped_by_clock_change(local, context.tz)
            and not _date_only(value)
        ):
            raise _FieldError(
                f"{local.isoformat()} does not exist in {context.tz.key}: the clocks skipped it (daylight saving); "
                "give the time with its UTC offset"
            )
    try:
        moment = moment.astimezone(UTC)
    except OverflowError:  # year 1 or 9999 pushed past the calendar by its offset
        raise _FieldError(f"{moment.isoformat()} is out of range once converted to UTC") from None
    if moment > context.latest:
        raise _FieldError(f"{moment.isoformat()} is in the future")
    return moment


_DATE_ONLY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}|[0-9]{8}")


def _date_only(value: object) -> bool:
    """Whether a time value gives a date without a time (asked only of a skipped local time, so rarely)."""
    if isinstance(value, datetime):  # a spreadsheet's date cell arrives as a datetime at midnight
        return value.tzinfo is None and value.time() == time(0)
    if isinstance(value, date):
        return True
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value).is_integer() and _DATE_ONLY.fullmatch(str(int(value))) is not None
    return isinstance(value, str) and _DATE_ONLY.fullmatch(value.strip()) is not None


_ZONES_WITHOUT_CLOCK_CHANGES = frozenset({"UTC", "Etc/UTC", "GMT", "Etc/GMT", "Zulu"})  # the check costs nothing


def _skipped_by_clock_change(local: datetime, tz: ZoneInfo) -> bool:
    """Whether a wall-clock time never happened in ``tz`` (the hour skipped when clocks go forward): it does not
    come back unchanged from a round trip through UTC. Times the clocks went through twice read as the first."""
    try:
        there = local.replace(tzinfo=tz).astimezone(UTC).astimezone(tz)
    except (OverflowError, ValueError):  # year 1 or 9999: the offset check after this one reports it
        return False
    return there.replace(tzinfo=None) != local


def _timestamp_text(text: str) -> datetime:
    if text[4:5] != "-":  # ISO 8601, the common case, has a dash there; neither of the other forms has
        if len(text) == 8 and text.isdigit():
            try:
                return datetime.strptime(text, "%Y%m%d")  # noqa: DTZ007 - the caller applies the zone
            except ValueError:
                raise _FieldError(f"{text!r} is not a valid YYYYMMDD date") from None
        # Epoch seconds from 1973 on (9 digits or more): "2024" or an Excel serial day such as "45292" is no
        # moment of 1970, and is refused below as not a date.
        if _EPOCH.fullmatch(text) and len(text.lstrip("+-").split(".")[0]) >= 9:
            return _from_epoch(float(text))
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise _FieldError(
            f"{text!r} is not a date: use ISO 8601 (2024-03-01T14:30:00+01:00), YYYYMMDD or epoch seconds"
        ) from None


def _from_epoch(seconds: float) -> datetime:
    if not math.isfinite(seconds):
        raise _FieldError(f"{seconds!r} is not a time")
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        raise _FieldError(f"{seconds!r} epoch seconds is out of range (milliseconds?)") from None


_MAX_NESTING = 64  # levels of lists and objects in one attribute or property value


def _attributes_object(value: object) -> dict | None:
    """The object a customer's ``attributes`` column holds: a JSON object, or text that is one (the export's
    column); None for anything else, which stays one attribute of that name."""
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value.lstrip().startswith("{"):
        try:
            parsed = json.loads(value)
        except (ValueError, RecursionError):
            return None
        return parsed if isinstance(parsed, dict) else None
    return None


def _free_value(value: object, context: _Context, depth: int = 0) -> object:
    """An attribute or property value: numbers in text become numbers, blanks become null, text is checked."""
    if depth > _MAX_NESTING:
        raise _FieldError(f"is nested more than {_MAX_NESTING} levels deep")
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _FieldError(f"{value!r} cannot be stored (use an empty value for a missing one)")
        return value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, str):
        stripped = value.strip()
        if stripped == "":
            return None
        number = text_as_number(stripped)
        return number if number is not None else _check_text(value, context.max_text_chars)
    if isinstance(value, list):
        return [_free_value(item, context, depth + 1) for item in value]
    if isinstance(value, dict):
        return {_check_text(str(key), 255): _free_value(item, context, depth + 1) for key, item in value.items()}
    return _check_text(str(value), context.max_text_chars)


@dataclass(frozen=True)
class _Field:
    name: str
    parse: Callable[[object, _Context], object]
    aliases: tuple[str, ...]
    required: bool = False


_TEXT_255 = _text(255)
_FIELDS: dict[str, tuple[_Field, ...]] = {
    "customers": (
        _Field("external_id", _TEXT_255, ("external_id", "customer_id", "id"), required=True),
        _Field("email", _email, ("email",)),
        _Field("name", _TEXT_255, ("name", "full_name")),
        _Field("segment", _text(64), ("segment",)),
        _Field("country", _text(64), ("country",)),
        _Field("language", _text(16), ("language",)),
        _Field("signed_up_at", _timestamp, ("signed_up_at", "signup_date", "signed_up")),
        _Field("marketing_consent", _boolean, ("marketing_consent",)),
        _Field("opted_out_at", _timestamp, ("opted_out_at",)),
        _Field("churned", _boolean, ("churned",)),
        _Field("churned_at", _timestamp, ("churned_at",)),
    ),
    "orders": (
        _Field("external_id", _TEXT_255, ("external_id", "order_id")),
        _Field("customer_id", _TEXT_255, ("customer_id", "customer", "customer_external_id"), required=True),
        _Field("placed_at", _timestamp, ("placed_at", "date", "order_date", "timestamp", "time"), required=True),
        _Field("amount", _money, ("amount", "total", "value"), required=True),
        _Field("currency", _currency, ("currency",)),
        _Field("item_count", _count, ("item_count", "items", "quantity", "qty")),
        _Field("status", _choice(("completed", "returned", "cancelled", "refunded")), ("status",)),
        _Field("discount_amount", _non_negative_money, ("discount_amount", "discount")),
        _Field(
            "status_changed_at",
            _timestamp,
            ("status_changed_at", "returned_at", "refunded_at", "cancelled_at", "status_date"),
        ),
    ),
    "events": (
        _Field("external_id", _TEXT_255, ("external_id", "event_id")),
        _Field("customer_id", _TEXT_255, ("customer_id", "customer", "customer_external_id"), required=True),
        _Field("kind", _text(64), ("kind", "event", "event_type", "type"), required=True),
        _Field("occurred_at", _timestamp, ("occurred_at", "timestamp", "time", "date"), required=True),
    ),
    "messages": (
        _Field("external_id", _TEXT_255, ("external_id", "message_id")),
        _Field("customer_id", _TEXT_255, ("customer_id", "customer", "customer_external_id"), required=True),
        _Field("conversation_id", _TEXT_255, ("conversation_id", "conversation", "thread_id")),
        _Field("channel", _choice(("chat", "email", "phone", "review")), ("channel",)),
        _Field("author_role", _choice(("customer", "agent")), ("author_role", "role", "author")),
        _Field("sent_at", _timestamp, ("sent_at", "timestamp", "time", "date"), required=True),
        _Field("text", _text(strip=False), ("text", "body", "message", "content"), required=True),
    ),
}
# Where columns that map to no field go; None: they are ignored, with a note.
_EXTRA_INTO = {"customers": "attributes", "orders": None, "events": "properties", "messages": None}


# Normalised column names that say "this is the churn label" (telco's Churn, the bank file's Attrition_Flag, ...).
_LABEL_LIKE = frozenset({"churn", "churnflag", "churnlabel", "attrition", "attritionflag", "exited"})


def _normal(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


@dataclass(slots=True)
class ParsedRow:
    """A row that passed validation: field values ready for the model, plus free-form extras."""

    row: int
    values: dict[str, object]
    extra: dict[str, object] | None = None
    external_id: str = ""
    customer_external_id: str = ""


@dataclass(frozen=True)
class _Plan:
    fields: tuple[tuple[_Field, str], ...]  # field, column
    missing: tuple[_Field, ...]  # required fields with no column
    extras: tuple[str, ...]
    ignored: tuple[str, ...]
    # per field: name, column, parser, required, and whether a value of only spaces is blank (all but text)
    steps: tuple[tuple[str, str, Callable[[object, _Context], object], bool, bool], ...] = ()


class RowParser:
    """Turns records of one kind into ``ParsedRow`` or a list of ``RowError``, following ``ImportOptions``."""

    def __init__(self, options: ImportOptions) -> None:
        if options.kind not in KINDS:
            raise ImportFileError(f"unknown kind {options.kind!r}; use one of {', '.join(KINDS)}")
        self.options = options
        self.kind = options.kind
        self.fields = _FIELDS[options.kind]
        self.extra_into = _EXTRA_INTO[options.kind]
        known = {spec.name for spec in self.fields}
        for name in options.field_map:
            if name not in known:
                raise ImportFileError(
                    f"--map {name}=...: {self.kind} have no field {name!r}; fields: {', '.join(known)}", option="map"
                )
        if options.label_column and self.kind != "customers":
            raise ImportFileError("--label-col only applies to customers", option="label_col")
        try:
            tz = ZoneInfo(options.time_zone)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a directory ("America"), a name too long
            raise ImportFileError(f"unknown time zone {options.time_zone!r}", option="time_zone") from None
        now = options.now or datetime.now(UTC)
        self.context = _Context(tz=tz, latest=now + options.future_tolerance, max_text_chars=options.max_text_chars)
        self._plans: dict[tuple[str, ...], _Plan] = {}
        self.ignored_columns: set[str] = set()
        # Rows with a label and, with --positive, how many matched it and a few values seen (for a note).
        self.label_rows = 0
        self.label_positive = 0
        self.label_values: set[str] = set()
        # Orders converted to the store's currency, by their own currency (for a note).
        self.converted: dict[str, int] = {}

    def convert(self, values: dict[str, object], currency: str) -> dict[str, object]:
        """An order's values with its amounts in the store's currency (``parse`` checked that a rate exists)."""
        rate = self.options.exchange_rates[currency]
        converted = {**values, "currency": self.options.currency}
        for name in ("amount", "discount_amount"):
            if values.get(name) is not None:
                converted[name] = (values[name] * rate).quantize(_CENT)  # type: ignore[operator]
        self.converted[currency] = self.converted.get(currency, 0) + 1
        return converted

    def plan(self, columns: Sequence[str]) -> _Plan:
        key = tuple(columns)
        cached = self._plans.get(key)
        if cached is not None:
            return cached
        options = self.options
        available = [column for column in columns if column not in options.drop_columns]
        if options.label_column:
            available = [column for column in available if column != options.label_column]
        by_normal = {_normal(column): column for column in available}
        taken: set[str] = set()
        fields: list[tuple[_Field, str]] = []
        missing: list[_Field] = []
        for spec in self.fields:
            column = options.field_map.get(spec.name)
            if column is None:
                column = next((by_normal[_normal(a)] for a in spec.aliases if _normal(a) in by_normal), None)
                if column in taken:
                    column = None
            if column is None or column not in available:
                if spec.required:
                    missing.append(spec)
                continue
            taken.add(column)
            fields.append((spec, column))
        rest = tuple(column for column in available if column not in taken)
        plan = _Plan(
            fields=tuple(fields),
            missing=tuple(missing),
            extras=rest if self.extra_into else (),
            ignored=() if self.extra_into else rest,
            steps=tuple((spec.name, column, spec.parse, spec.required, spec.name != "text") for spec, column in fields),
        )
        if len(self._plans) >= 1024:  # JSON rows with ever-new key sets must not grow memory
            self._plans.clear()
        self._plans[key] = plan
        return plan

    def label_like_columns(self) -> list[str]:
        """Columns of the rows seen that were stored as attributes although their name says churn label ("Churn",
        "Attrition_Flag", "Exited"): without --label-col such a column becomes a model feature holding the answer."""
        if self.kind != "customers" or self.options.label_column:
            return []
        extras = {column for plan in self._plans.values() for column in plan.extras}
        return sorted(column for column in extras if _normal(column) in _LABEL_LIKE)

    def check_columns(self, columns: Sequence[str]) -> _Plan:
        """Check a file header up front: a missing column is an error for the whole file."""
        options = self.options
        for field_name, column in options.field_map.items():
            if column not in columns:
                raise ImportFileError(
                    f"--map {field_name}={column}: the file has no column {column!r}; columns: {', '.join(columns)}",
                    option="map",
                )
        if options.label_column and options.label_column not in columns:
            raise ImportFileError(
                f"--label-col {options.label_column}: the file has no such column; columns: {', '.join(columns)}",
                option="label_col",
            )
        plan = self.plan(columns)
        if plan.missing:
            spec = plan.missing[0]
            hint = ""
            if len(columns) == 1 and any(delimiter in columns[0] for delimiter in _DELIMITERS):
                hint = " The header was read as a single column: wrong delimiter? Pass --delimiter."
            raise ImportFileError(
                f"missing required column for {self.kind} field {spec.name!r} (looked for "
                f"{', '.join(spec.aliases)}); name the column with --map {spec.name}=COLUMN (the API's map parameter). "
                f"The file's columns: {', '.join(columns)}.{hint}"
            )
        return plan

    def parse(self, row: int, record: Mapping[str, object], plan: _Plan | None = None) -> ParsedRow | list[RowError]:
        """One record as a ``ParsedRow``, or all its errors. ``plan``: the file's, when all rows share a header."""
        if plan is None:
            plan = self.plan(tuple(record))
        errors = [RowError(row, spec.name, "is missing") for spec in plan.missing] if plan.missing else []
        context = self.context
        values: dict[str, object] = {}
        for name, column, parse, required, spaces_are_blank in plan.steps:
            raw = record[column]
            # Blank means absent, except for message text, which is kept exactly as given.
            if raw is None or raw == "" or (spaces_are_blank and type(raw) is str and raw.isspace()):
                if required:
                    errors.append(RowError(row, name, f"is empty (column {column!r})"))
                continue
            try:
                values[name] = parse(raw, context)
            except _FieldError as exc:
                errors.append(RowError(row, name, f"{exc} (column {column!r})"))
        extra: dict[str, object] | None = None
        if self.extra_into:
            extra = {}
            # A customer's "attributes" column holding an object (as the API answers them; the export writes it as
            # JSON text) is their attributes, read first so that a column beside it wins over the same key.
            for column in sorted(plan.extras, key=lambda column: column != "attributes"):
                nested = _attributes_object(record[column]) if column == "attributes" == self.extra_into else None
                for key, value in nested.items() if nested is not None else ((column, record[column]),):
                    try:
                        extra[_check_text(str(key), 255)] = _free_value(value, context)
                    except _FieldError as exc:
                        errors.append(RowError(row, f"{self.extra_into}.{key}", str(exc)))
        elif plan.ignored:
            self.ignored_columns.update(plan.ignored)
        label = self.options.label_column
        if label and label in record:
            raw = record[label]
            if raw not in _EMPTY and str(raw).strip():
                if self.options.positive_label is not None:
                    try:
                        # A spreadsheet's TRUE/FALSE cell or a JSON true/false reads as the words, compared with
                        # --positive without regard to case (as churn_evaluate does).
                        text = ("true" if raw else "false") if isinstance(raw, bool) else _as_text(raw).strip()
                    except _FieldError as exc:
                        errors.append(RowError(row, "churned", f"{exc} (column {label!r})"))
                    else:
                        churned = text.casefold() == self.options.positive_label.strip().casefold()
                        values["churned"] = churned
                        self.label_rows += 1
                        self.label_positive += churned
                        if len(self.label_values) < 10:
                            self.label_values.add(text[:40])
                else:
                    try:
                        values["churned"] = _boolean(raw, context)
                    except _FieldError as exc:
                        errors.append(RowError(row, "churned", f"{exc} (column {label!r}; set --positive)"))
        if self.kind == "orders" and "amount" in values and values["amount"] < 0:  # type: ignore[operator]
            status = values.get("status", "completed")
            if status not in ("returned", "refunded"):
                errors.append(
                    RowError(row, "amount", f"{values['amount']} is negative, which needs status returned or refunded")
                )
        store = self.options.currency
        if self.kind == "orders" and store is not None:
            currency = values.get("currency", store)
            rate = self.options.exchange_rates.get(currency)
            for name in ("amount", "discount_amount") if currency != store and rate is not None else ():
                amount = values.get(name)
                if isinstance(amount, Decimal) and abs(amount * rate) >= _MONEY_LIMIT:  # type: ignore[operator]
                    errors.append(
                        RowError(row, name, f"{amount} {currency} is {amount * rate:.2f} {store}: too large")  # type: ignore[operator]
                    )
            if currency != store and rate is None:
                errors.append(
                    RowError(
                        row,
                        "currency",
                        f"{currency} is not the store's currency {store} (CHURN_CURRENCY) and CHURN_EXCHANGE_RATES has "
                        f"no rate for it: amounts in two currencies cannot be added up; set "
                        f"CHURN_EXCHANGE_RATES={currency}=<the value of 1 {currency} in {store}>",
                    )
                )
        if self.kind == "orders" and values.get("status_changed_at") is not None:
            changed, placed = values["status_changed_at"], values.get("placed_at")
            if values.get("status", "completed") == "completed":
                errors.append(
                    RowError(
                        row, "status_changed_at", "is for returned, refunded or cancelled orders; this one is completed"
                    )
                )
            elif isinstance(placed, datetime) and changed < placed:  # type: ignore[operator]
                errors.append(
                    RowError(row, "status_changed_at", f"{changed.isoformat()} is before the order was placed")
                )
        if str(values.get("external_id", "")).startswith("auto-"):
            errors.append(RowError(row, "external_id", "ids starting with 'auto-' are reserved for generated ids"))
        if errors:
            return errors
        parsed = ParsedRow(row=row, values=values, extra=extra)
        parsed.external_id = str(values.pop("external_id", ""))
        parsed.customer_external_id = str(values.pop("customer_id", ""))
        if self.kind == "messages" and not values.get("conversation_id"):
            values["conversation_id"] = parsed.customer_external_id
        return parsed


# --- Identity: deterministic ids and duplicates within one file -------------------------------------------------


_TIME_FIELDS = {"orders": "placed_at", "events": "occurred_at", "messages": "sent_at"}


def _fingerprint(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


class FileKeys:
    """Counts how often each key occurred so far in one file, in eight bytes a key.

    Keys are 64-bit fingerprints held in one sorted numpy array (plus a dict for the few keys seen
    more than once), so a file of a million rows costs 8 MB, not a Python set of a million strings.
    """

    def __init__(self) -> None:
        self._seen = np.empty(0, dtype=np.uint64)
        self._repeats: dict[int, int] = {}

    def occurrences(self, keys: Sequence[int]) -> list[int]:
        """For each key in order, its occurrence number in the file so far (1 for the first)."""
        if not keys:
            return []
        batch = np.fromiter(keys, dtype=np.uint64, count=len(keys))
        if len(self._seen):
            positions = np.searchsorted(self._seen, batch)
            clipped = np.minimum(positions, len(self._seen) - 1)
            present = (self._seen[clipped] == batch).tolist()
        else:
            present = [False] * len(keys)
        counts: dict[int, int] = {}
        fresh: list[int] = []
        result: list[int] = []
        for key, seen_before in zip(keys, present, strict=True):
            if key in counts:
                number = counts[key] + 1
            elif seen_before:
                number = self._repeats.get(key, 1) + 1
            else:
                number = 1
                fresh.append(key)
            counts[key] = number
            result.append(number)
        for key, number in counts.items():
            if number > 1:
                self._repeats[key] = number
        if fresh:
            new = np.sort(np.fromiter(fresh, dtype=np.uint64, count=len(fresh)))
            self._seen = np.insert(self._seen, np.searchsorted(self._seen, new), new)
        return result


def _canonical(kind: str, parsed: ParsedRow) -> str:
    values = parsed.values
    parts = [kind, parsed.customer_external_id]
    for name in sorted(values):
        value = values[name]
        parts.append(f"{name}={value.isoformat()}" if isinstance(value, datetime) else f"{name}={value!s}")
    if parsed.extra:
        parts.append(json.dumps(parsed.extra, sort_keys=True, ensure_ascii=False))
    return "\x1f".join(parts)


def _content_digest(canonical: str) -> bytes:
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).digest()


def _time_prefix(moment: object) -> int:
    return max(0, int(moment.timestamp())) if isinstance(moment, datetime) else 0


def _auto_ids(keys: FileKeys, digests: list[bytes], seconds: list[int]) -> list[str]:
    numbers = keys.occurrences([int.from_bytes(digest[:8], "little") for digest in digests])
    ids = []
    for content_digest, second, number in zip(digests, seconds, numbers, strict=True):
        digest = content_digest if number == 1 else hashlib.sha256(content_digest + f"\x1f{number}".encode()).digest()
        ids.append(f"auto-{second:010x}-{digest[:10].hex()}")  # 20 hex digits
    return ids


def _repeated_ids(keys: FileKeys, external_ids: list[str]) -> list[bool]:
    """For each explicit id, whether it appeared earlier in the file."""
    return [number > 1 for number in keys.occurrences([_fingerprint(f"id\x1f{i}") for i in external_ids])]


def _repeated_error(row: int, external_id: str) -> RowError:
    return RowError(row, "external_id", f"{external_id!r} appears more than once in this file")


def assign_external_ids(*, kind: str, rows: list[ParsedRow], keys: FileKeys) -> list[RowError]:
    """Give rows without an external id a deterministic one, and reject repeated external ids.

    A row without an id gets ``auto-``, its time in epoch seconds (10 hex digits), and 20 hex
    digits of d = sha256(kind, canonical content) for the first occurrence of that content in the
    file, or of sha256(d, occurrence number) for the later ones: two identical rows stay two
    records, and a re-import of the file produces the same ids, so it inserts nothing. The time
    prefix makes a time-ordered log insert at the right edge of the unique index instead of at
    random places, which halves the cost of inserting on both databases. A row whose explicit id
    appeared earlier in the same file is rejected. Rejected rows are removed from ``rows``.
    ``PreparedRows`` does the same for rows of orders, events and messages on their way to the database.
    """
    explicit = [row for row in rows if row.external_id]
    automatic = [row for row in rows if not row.external_id]
    errors: list[RowError] = []
    repeated: set[int] = set()
    for row, again in zip(explicit, _repeated_ids(keys, [row.external_id for row in explicit]), strict=True):
        if again:
            repeated.add(id(row))
            errors.append(_repeated_error(row.row, row.external_id))
    if automatic:
        time_field = _TIME_FIELDS.get(kind)
        digests = [_content_digest(_canonical(kind, row)) for row in automatic]
        seconds = [_time_prefix(row.values.get(time_field) if time_field else None) for row in automatic]
        for row, external_id in zip(automatic, _auto_ids(keys, digests, seconds), strict=True):
            row.external_id = external_id
    if repeated:
        rows[:] = [row for row in rows if id(row) not in repeated]
    return errors


# --- Rows of orders, events and messages, ready for their table ---------------------------------------------------

PreparedRow = tuple[object, ...]
"""(row number, explicit external id or "", customer external id, sha256 of the content when there is no explicit
id, the time prefix of an automatic id, then the values of the table columns in order, defaults filled in)."""


class PreparedRows:
    """Checks records of orders, events or messages and makes them table rows, with their external ids.

    ``prepare(row, record)`` is ``RowParser.parse`` followed by the conversion to a ``PreparedRow``, or the
    row's errors. Records of a file with a header take a shorter way when every value is plain text that
    needs nothing but the common cases of the field parsers (what most rows of a large file are); any
    other record, and any value the short way would reject, goes through ``parse``, so the outcome,
    errors and external ids included, is the same either way. ``identify(batch)`` then gives each row its
    external id as ``assign_external_ids`` does: ``(row number, external id, customer external id, *values)``.
    """

    def __init__(
        self, parser: RowParser, *, columns: Sequence[str], defaults: Mapping[str, object], keys: FileKeys
    ) -> None:
        if parser.kind not in _TIME_FIELDS:
            raise ValueError(f"{parser.kind} are not prepared as table rows")
        self.parser = parser
        self.kind = parser.kind
        self.columns = tuple(columns)
        self.store_currency = parser.options.currency if self.kind == "orders" else None
        if self.store_currency is not None:
            defaults = {**defaults, "currency": self.store_currency}  # an order without a currency is in it
        self.defaults = tuple(defaults.get(name) for name in self.columns)
        self.keys = keys
        self.time_field = _TIME_FIELDS[self.kind]
        self._plan: _Plan | None = None  # the plan of the last records, and its short way
        self._short: Callable[[int, Mapping[str, object]], PreparedRow | None] | None = None

    def prepare(
        self, row: int, record: Mapping[str, object], plan: _Plan | None = None
    ) -> PreparedRow | list[RowError]:
        if plan is not None:
            if plan is not self._plan:
                self._plan, self._short = plan, self._short_way(plan)
            if self._short is not None:
                try:
                    prepared = self._short(row, record)
                except _FieldError:
                    prepared = None
                if prepared is not None:
                    return prepared
        parsed = self.parser.parse(row, record, plan)
        if type(parsed) is list:
            return parsed
        return self.from_parsed(parsed)  # type: ignore[arg-type]

    def from_parsed(self, parsed: ParsedRow) -> PreparedRow:
        values = parsed.values
        if self.kind == "events":
            values = {**values, "properties": parsed.extra or {}}
        digest = None if parsed.external_id else _content_digest(_canonical(self.kind, parsed))
        currency = values.get("currency")
        if self.store_currency is not None and currency is not None and currency != self.store_currency:
            # Converted after the digest: a row without an id keeps its id when the rate changes.
            values = self.parser.convert(values, currency)
        return (
            parsed.row,
            parsed.external_id,
            parsed.customer_external_id,
            digest,
            _time_prefix(values.get(self.time_field)),
            *(values.get(name, default) for name, default in zip(self.columns, self.defaults, strict=True)),
        )

    def identify(self, rows: list[PreparedRow]) -> tuple[list[PreparedRow], list[RowError]]:
        """Rows with their external ids (see ``assign_external_ids``), and the errors of repeated explicit ids."""
        explicit = [row for row in rows if row[1]]
        again = _repeated_ids(self.keys, [row[1] for row in explicit])  # type: ignore[misc]
        repeated = {id(row) for row, seen in zip(explicit, again, strict=True) if seen}
        errors = [_repeated_error(row[0], row[1]) for row in explicit if id(row) in repeated]  # type: ignore[arg-type]
        automatic = [row for row in rows if not row[1]]
        auto_ids = iter(_auto_ids(self.keys, [row[3] for row in automatic], [row[4] for row in automatic]))  # type: ignore[misc]
        identified = [(row[0], row[1] or next(auto_ids), row[2], *row[5:]) for row in rows if id(row) not in repeated]
        return identified, errors

    def _short_way(self, plan: _Plan) -> Callable[[int, Mapping[str, object]], PreparedRow | None] | None:
        """The shorter way for the records of one plan: a ``PreparedRow``, or None when ``parse`` must decide."""
        parser, kind, context = self.parser, self.kind, self.parser.context
        if plan.missing:
            return None
        extras = plan.extras
        try:
            for column in extras:
                _check_text(column, 255)
        except _FieldError:
            return None
        steps = {name: (column, parse, required, blank) for name, column, parse, required, blank in plan.steps}
        customer_column, customer_parse = steps.pop("customer_id")[:2]
        external_id = steps.pop("external_id", None)
        if kind == "messages" and "conversation_id" not in steps:
            steps["conversation_id"] = (None, None, False, True)  # the customer's id, as parse() makes it
        slots = {name: position for position, name in enumerate(self.columns)}
        # in the order of the canonical content: by field name
        fields = [
            (name, column, parse, required, blank, slots.get(name), name == self.time_field)
            for name, (column, parse, required, blank) in sorted(steps.items())
        ]
        template = list(self.defaults)
        time_slot = slots[self.time_field]
        amount_slot = slots.get("amount") if kind == "orders" else None
        store_currency = self.store_currency
        currency_slot = slots.get("currency") if store_currency is not None else None
        changed_slot = slots.get("status_changed_at") if kind == "orders" else None
        properties_slot = slots.get("properties") if kind == "events" else None
        ignored = plan.ignored

        def short(row: int, record: Mapping[str, object]) -> PreparedRow | None:
            raw = record[customer_column]
            if type(raw) is not str:
                return None
            customer = customer_parse(raw, context)
            if not customer:
                return None
            explicit = ""
            if external_id is not None:
                raw = record[external_id[0]]
                if type(raw) is not str:
                    return None
                if raw and not raw.isspace():
                    explicit = external_id[1](raw, context)
                    if explicit.startswith("auto-"):
                        return None  # reserved for generated ids: parse() says so
            values = template.copy()
            parts = [kind, customer]
            for name, column, parse, required, blank, slot, is_time in fields:
                if column is None:  # a message's conversation: its customer's
                    value = customer
                else:
                    raw = record[column]
                    if type(raw) is not str:
                        return None
                    if raw == "" or (blank and raw.isspace()):
                        if required:
                            return None
                        if name == "conversation_id":
                            value = customer
                        else:
                            continue
                    else:
                        value = parse(raw, context)  # not blank, so never empty
                parts.append(f"{name}={value.isoformat()}" if is_time else f"{name}={value!s}")
                if slot is not None:
                    values[slot] = value
            if amount_slot is not None and values[amount_slot] < 0:
                return None  # parse() knows whether the status allows it
            if currency_slot is not None and values[currency_slot] != store_currency:
                return None  # parse() refuses it or from_parsed() converts it
            if changed_slot is not None and values[changed_slot] is not None:
                return None  # parse() checks it against the status and the placement time
            if properties_slot is not None:
                extra = {}
                for column in extras:
                    value = record[column]
                    if type(value) is not str:
                        return None
                    extra[column] = _free_value(value, context)
                if extra:
                    parts.append(json.dumps(extra, sort_keys=True, ensure_ascii=False))
                values[properties_slot] = extra
            if ignored:
                parser.ignored_columns.update(ignored)
            digest = None if explicit else _content_digest("\x1f".join(parts))
            return (row, explicit, customer, digest, _time_prefix(values[time_slot]), *values)

        return short
