"""Project-wide REST plumbing: capped pagination, safe ordering, a body size limit and one error format.

Every API error reads ``{"error": {"code": "...", "message": "...", "fields": {"name": ["..."]}}}``:
``code`` is a stable machine-readable word (``invalid``, ``not_authenticated``, ``permission_denied``,
``not_found``, ``conflict``, ``throttled``, ``request_too_large``, ...), ``message`` a sentence for people,
and ``fields`` the messages per input field (empty when the error is not about one field). Raised
exceptions get it from :func:`error_envelope_exception_handler`; error responses a view builds by hand
(``Response({"detail": ...}, status=409)``) get it from :class:`ErrorEnvelopeJSONRenderer`, so no error
leaves the API in another shape. A body that already carries ``{"error": {...}}`` (the ingestion report of a
file whose every row was rejected) keeps its other keys. Outside DRF views, an unknown path or a crash under
``/api/`` answers in the envelope too (:func:`not_found_handler`, :func:`server_error_handler`).

List filters read their query parameters with :func:`query_choice`, :func:`query_int`, :func:`query_float` and
:func:`query_bool`: a value that cannot be meant (``?rule=abc``, ``?risk_tier=extreme``) is a 400 naming the
parameter, never silently ignored (which would answer with every row) or silently empty.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import IO, TYPE_CHECKING

from django.conf import settings
from django.core.exceptions import FieldDoesNotExist, RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import BooleanField, F, Func, Q, QuerySet, Value
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from rest_framework import exceptions, status
from rest_framework.filters import OrderingFilter
from rest_framework.pagination import BasePagination, PageNumberPagination
from rest_framework.parsers import JSONParser
from rest_framework.renderers import JSONRenderer
from rest_framework.utils.urls import remove_query_param, replace_query_param

if TYPE_CHECKING:  # DRF loads these classes while rest_framework.views is still importing
    from django.db.models import Expression, Field, Model
    from rest_framework.request import Request
    from rest_framework.response import Response
    from rest_framework.views import APIView

__all__ = [
    "CappedPageNumberPagination",
    "ErrorEnvelopeJSONRenderer",
    "KeysetPagination",
    "LimitedJSONParser",
    "RequestTooLarge",
    "StableOrderingFilter",
    "error_body",
    "error_envelope_exception_handler",
    "keyset_cursor",
    "not_found_handler",
    "query_bool",
    "query_choice",
    "query_float",
    "query_int",
    "server_error_handler",
]

_STATUS_CODES = {
    400: "invalid",
    401: "not_authenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "request_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "throttled",
    503: "unavailable",
}
_NON_FIELD_KEYS = ("non_field_errors", "__all__")


class RequestTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "request_too_large"


class LimitedJSONParser(JSONParser):
    """JSON bodies up to ``DATA_UPLOAD_MAX_MEMORY_SIZE`` bytes; larger ones are refused with 413 unread.

    DRF parsers read the request stream directly, so Django's own limit (which guards ``request.body``
    and form data) does not apply to them; this one does.
    """

    def parse(self, stream: IO[bytes], media_type: str | None = None, parser_context: Mapping | None = None):  # noqa: ANN201
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if limit is not None:
            request = (parser_context or {}).get("request")
            declared = request.META.get("CONTENT_LENGTH") if request is not None else None
            if declared and str(declared).isdigit() and int(declared) > limit:
                raise RequestTooLarge(f"The request body is larger than {limit:,} bytes (API_MAX_BODY_BYTES).")
            body = stream.read(limit + 1)
            if len(body) > limit:
                raise RequestTooLarge(f"The request body is larger than {limit:,} bytes (API_MAX_BODY_BYTES).")
            stream = io.BytesIO(body)
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - the body is nested too deeply.") from None
        where = _nul_in(data)
        if where is not None:
            raise exceptions.ParseError(
                f"JSON parse error - {where} holds a NUL character (\\u0000), which text cannot store."
            )
        return data


def _nul_in(data: object) -> str | None:
    """Where a JSON document holds a string (or key) with a NUL character (``"body"``, ``segments[2]``), if anywhere.
    Iterative, so a deep but valid document cannot exhaust the stack."""
    stack: list[tuple[object, str]] = [(data, "")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return path or "the body"
        elif isinstance(value, dict):
            for key, item in value.items():
                if "\x00" in str(key):
                    return f"a key of {path or 'the body'}"
                stack.append((item, f"{path}.{key}" if path else str(key)))
        elif isinstance(value, list):
            stack.extend((item, f"{path}[{i}]") for i, item in enumerate(value))
    return None


class _CappedPageSize:
    """``?page_size=`` (default ``PAGE_SIZE``, at most ``API_MAX_PAGE_SIZE``)."""

    page_size_query_param = "page_size"

    @property
    def max_page_size(self) -> int:
        return settings.API_MAX_PAGE_SIZE

    def get_page_size(self, request: Request) -> int | None:
        """DRF falls back to the default page for any value it cannot read; here a page size that cannot be meant
        (not a whole number, or below 1) is a 400 naming it. Above the maximum it is the maximum, as documented."""
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None or raw == "":
            return min(self.page_size, self.max_page_size)  # the settings check it; a test may change one of them
        try:
            size = int(raw.strip())
        except ValueError:
            raise exceptions.ValidationError({self.page_size_query_param: ["must be a whole number"]}) from None
        if size < 1:
            raise exceptions.ValidationError({self.page_size_query_param: ["must be at least 1"]})
        return min(size, self.max_page_size)


class CappedPageNumberPagination(_CappedPageSize, PageNumberPagination):
    """``?page=`` and ``?page_size=`` (default ``PAGE_SIZE``, at most ``API_MAX_PAGE_SIZE``).

    A page number that cannot be meant (not a whole number, or below 1) is a 400 naming ``page``; DRF answered 404
    "Invalid page." as for a page past the last one (still a 404)."""

    def get_page_number(self, request: Request, paginator: object) -> str | int:
        number = super().get_page_number(request, paginator)
        if number in self.last_page_strings:
            return number
        text = str(number).strip()
        if not (text.isascii() and text.isdigit()) or int(text) < 1:
            raise exceptions.ValidationError({self.page_query_param: ["must be a whole number from 1, or last"]})
        return text


class KeysetPagination(_CappedPageSize, BasePagination):
    """``?cursor=`` and ``?page_size=``: pages that start after the last row of the page before, found by the values
    of the ordering columns (keyset pagination), never by counting or skipping the rows before them.

    For lists whose total is costly to know (the newest score of each of 50,000 customers): no ``count``, and every
    page, the thousandth as the first, costs what one page costs where an index serves the order. The answer is
    ``{"next": url or null, "previous": url or null, "results": [...]}``. The cursor is opaque (it names the ordering
    it was made for: one used with another ``?ordering=`` is a 400, as is ``?page=``, so that a client written for
    page numbers fails instead of reading the first page forever). The ordering must end in a unique column (the
    ``StableOrderingFilter`` adds the primary key) and name columns that are never null.

    Not DRF's ``CursorPagination``: its cursor holds the first ordering column's value and an offset among the rows
    that share it, and its documentation warns against a float column. The scores' order is a float probability
    with long runs of ties (a calibrated model scores many customers alike), which an offset would skip through; a
    cursor over every ordering column, down to the primary key, starts each page right after its row.
    """

    cursor_query_param = "cursor"

    @property
    def page_size(self) -> int:
        return settings.REST_FRAMEWORK["PAGE_SIZE"]

    def paginate_queryset(self, queryset: QuerySet, request: Request, view: APIView | None = None) -> list | None:
        if request.query_params.get("page") not in (None, ""):
            raise exceptions.ValidationError(
                {"page": ["This list is paged by cursor: follow the next and previous links (?cursor=)."]}
            )
        size = self.get_page_size(request)
        self.request = request
        self.ordering = _keyset_ordering(queryset)
        queryset = queryset.order_by(*(f"-{name}" if desc else name for name, desc in self.ordering))
        after, self.reverse, inclusive = self._decode_cursor(queryset.model)
        if after is not None:
            queryset = queryset.filter(
                _keyset_after(self.ordering, after, reverse=self.reverse, inclusive=inclusive, model=queryset.model)
            )
        if self.reverse:
            queryset = queryset.reverse()
        rows = list(queryset[: size + 1])
        more = len(rows) > size
        rows = rows[:size]
        if self.reverse:
            rows.reverse()
            self.has_previous, self.has_next = more, True
        else:
            self.has_previous, self.has_next = after is not None, more
        self.first, self.last = (rows[0], rows[-1]) if rows else (None, None)
        # Past the end or before the start (the rows there went since the cursor was made): link back to where the
        # cursor was, its row included, or the page back would leave out that row (still listed).
        self.link_back_inclusive = not rows and after is not None
        if self.link_back_inclusive:
            self.first = self.last = after
        return rows

    def _decode_cursor(self, model: type[Model]) -> tuple[list | None, bool, bool]:
        raw = self.request.query_params.get(self.cursor_query_param)
        if not raw:
            return None, False, False
        invalid = exceptions.ValidationError({self.cursor_query_param: ["is not a cursor of this list"]})
        try:
            cursor = json.loads(base64.urlsafe_b64decode(raw.encode("ascii") + b"=" * (-len(raw) % 4)))
            ordering, values = cursor["o"], cursor["v"]
            reverse, inclusive = bool(cursor.get("r")), bool(cursor.get("i"))
        except (ValueError, UnicodeError, binascii.Error, TypeError, KeyError):
            raise invalid from None
        if ordering != [f"-{name}" if desc else name for name, desc in self.ordering]:
            raise exceptions.ValidationError(
                {self.cursor_query_param: ["was made for another ordering: start again without it"]}
            )
        if not isinstance(values, list) or len(values) != len(self.ordering):
            raise invalid
        try:
            after = [
                model._meta.get_field(name).to_python(value)
                for (name, _), value in zip(self.ordering, values, strict=True)
            ]
            # The cursors made here hold datetimes with their offset, in UTC. One beyond datetime's range once in UTC
            # (0001-01-01T00:00+14:00) overflowed in the query on SQLite: a 500 for a malformed cursor.
            after = [_cursor_datetime(value) if isinstance(value, datetime) else value for value in after]
        except (DjangoValidationError, TypeError, ValueError, OverflowError):
            raise invalid from None
        if any(value is None for value in after):
            raise invalid
        return after, reverse, inclusive

    def _link(self, row: object, *, reverse: bool) -> str:
        values = row if isinstance(row, list) else [getattr(row, name) for name, _ in self.ordering]
        token = keyset_cursor(
            [f"-{name}" if desc else name for name, desc in self.ordering],
            values,
            reverse=reverse,
            inclusive=self.link_back_inclusive,
        )
        url = remove_query_param(self.request.build_absolute_uri(), "page")
        return replace_query_param(url, self.cursor_query_param, token)

    def get_next_link(self) -> str | None:
        return self._link(self.last, reverse=False) if self.has_next and self.last is not None else None

    def get_previous_link(self) -> str | None:
        if not self.has_previous or self.first is None:
            return None
        return self._link(self.first, reverse=True)

    def get_paginated_response(self, data: object) -> Response:
        from rest_framework.response import Response

        return Response({"next": self.get_next_link(), "previous": self.get_previous_link(), "results": data})

    def get_paginated_response_schema(self, schema: dict) -> dict:
        link = {"type": "string", "nullable": True, "format": "uri"}
        return {
            "type": "object",
            "required": ["next", "previous", "results"],
            "properties": {
                "next": {**link, "description": "The next page; null on the last page."},
                "previous": {**link, "description": "The page before; null on the first page."},
                "results": schema,
            },
        }

    def get_schema_operation_parameters(self, view: APIView) -> list[dict]:
        return [
            {
                "name": self.cursor_query_param,
                "required": False,
                "in": "query",
                "description": "Where the page starts: take it from the next or previous link of the page before "
                "(opaque; made for one ordering).",
                "schema": {"type": "string"},
            },
            {
                "name": self.page_size_query_param,
                "required": False,
                "in": "query",
                "description": "Rows per page (at most API_MAX_PAGE_SIZE).",
                "schema": {"type": "integer"},
            },
        ]


def _keyset_ordering(queryset: QuerySet) -> list[tuple[str, bool]]:
    """The queryset's ordering as (column attribute, descending) pairs: a foreign key by its id column (the related
    rows' order must be their id, as customers' is), the primary key by its name."""
    meta = queryset.model._meta
    ordering = []
    for item in queryset.query.order_by or ("-pk",):
        if not isinstance(item, str) or "__" in item or item.lstrip("-") == "?":
            raise TypeError(f"keyset pagination orders by the model's own columns, not {item!r}")
        name = item.lstrip("-")
        field = meta.pk if name == "pk" else meta.get_field(name)
        if field.is_relation and list(field.related_model._meta.ordering or ["pk"]) not in (["pk"], ["id"]):
            raise TypeError(f"keyset pagination cannot order by {name}: its rows are ordered by other columns")
        ordering.append((field.attname, item.startswith("-")))
    if ordering[-1][0] != meta.pk.attname:
        raise TypeError("keyset pagination needs an ordering that ends in the primary key")
    return ordering


def _keyset_after(
    ordering: list[tuple[str, bool]], values: list, *, reverse: bool, inclusive: bool = False, model: type[Model]
) -> Q | Expression:
    """Rows after the row with ``values`` in ``ordering`` (before it when ``reverse``; that row too when
    ``inclusive``).

    An ordering in one direction (``-as_of, -id``) is one row comparison, ``(as_of, id) < (x, y)``, which a B-tree
    index on those columns serves as the start of its range: a page that starts among 50,000 scores of one ``as_of``
    starts at its row, not at the first of them. Mixed directions (``customer, -as_of``) cannot be one comparison:
    they are ``a > x OR (a = x AND b < y) ...`` with the first column's bound on its own (``customer >= x``), so that
    an index on the ordering serves that as a range."""
    if len({desc for _, desc in ordering}) == 1:
        descending = ordering[0][1]
        operator = ("<" if descending != reverse else ">") + ("=" if inclusive else "")
        meta = model._meta
        fields = [meta.pk if name == meta.pk.attname else _field_by_attname(model, name) for name, _ in ordering]
        return _RowComparison(
            [name for name, _ in ordering],
            [Value(value, output_field=field) for field, value in zip(fields, values, strict=True)],
            operator=operator,
        )

    def beyond(name: str, desc: bool, *, last: bool = False) -> str:
        return f"{name}__{'lt' if desc != reverse else 'gt'}{'e' if last and inclusive else ''}"

    (first, first_desc), first_value = ordering[0], values[0]
    condition = Q()
    for position in range(len(ordering)):
        equal = {name: value for (name, _), value in zip(ordering[:position], values[:position], strict=True)}
        name, desc = ordering[position]
        condition |= Q(**equal, **{beyond(name, desc, last=position == len(ordering) - 1): values[position]})
    bound = Q(**{f"{first}__{'lte' if first_desc != reverse else 'gte'}": first_value})
    return bound & condition


def _field_by_attname(model: type[Model], attname: str) -> Field:
    return next(field for field in model._meta.concrete_fields if field.attname == attname)


class _RowComparison(Func):
    """``(column, column, ...) <op> (value, value, ...)``: SQL's row comparison (PostgreSQL, SQLite 3.15+), which
    compares left to right as a keyset does, and which a B-tree index on the columns, in that order, serves as the
    bound of its range."""

    output_field = BooleanField()

    def __init__(self, columns: list[str], values: list[Value], *, operator: str) -> None:
        if operator not in ("<", "<=", ">", ">="):
            raise ValueError(f"not a row comparison: {operator!r}")
        self.operator = operator
        super().__init__(*(F(column) for column in columns), *values, output_field=BooleanField())

    def as_sql(self, compiler, connection, **extra_context) -> tuple[str, list]:  # noqa: ANN001, ARG002
        parts, params = [], []
        for expression in self.get_source_expressions():
            sql, expression_params = compiler.compile(expression)
            parts.append(sql)
            params.extend(expression_params)
        half = len(parts) // 2
        return f"({', '.join(parts[:half])}) {self.operator} ({', '.join(parts[half:])})", params


def keyset_cursor(
    ordering: Sequence[str], values: Sequence[object], *, reverse: bool = False, inclusive: bool = False
) -> str:
    """The ``cursor`` of :class:`KeysetPagination` for the row with ``values`` in ``ordering`` (column names, ``-``
    for descending, the id last): the pages after it, or before it with ``reverse``; that row too with
    ``inclusive``."""
    cursor: dict[str, object] = {"o": list(ordering), "v": [_cursor_value(value) for value in values]}
    if reverse:
        cursor["r"] = 1
    if inclusive:
        cursor["i"] = 1
    return base64.urlsafe_b64encode(json.dumps(cursor, separators=(",", ":")).encode()).rstrip(b"=").decode()


def _cursor_datetime(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("a cursor's datetimes carry their offset")
    return value.astimezone(UTC)


def _cursor_value(value: object) -> object:
    if isinstance(value, datetime | date):
        return value.isoformat()  # every microsecond: the next page starts exactly after the last row
    if isinstance(value, Decimal):
        return str(value)
    return value


def _nulls_last(queryset: QuerySet, term: object) -> object:
    """``term`` with rows that have no value last, in either direction, when its column may be null (an unsent
    intervention's ``sent_at``, a running run's ``finished_at``). PostgreSQL puts nulls last going up and first going
    down, SQLite the other way round, so the same request listed them at opposite ends. Columns that are never null
    keep the plain order, which their indexes serve."""
    if not isinstance(term, str):
        return term
    name = term.lstrip("-")
    try:
        field = queryset.model._meta.get_field(name)
    except FieldDoesNotExist:
        field = None
    if field is not None and not field.null:
        return term
    if field is None and name not in queryset.query.annotations:
        return term  # pk, a lookup through a relation: left to Django as it was
    column = F(name)
    return column.desc(nulls_last=True) if term.startswith("-") else column.asc(nulls_last=True)


class StableOrderingFilter(OrderingFilter):
    """``?ordering=field,-other`` over the fields a view lists in ``ordering_fields`` (none otherwise).

    Unlike DRF's filter it never falls back to every serializer field (some are computed and would fail
    in SQL), and it adds the primary key as the last key so that pages never overlap.
    """

    def get_valid_fields(self, queryset: QuerySet, view: APIView, context: dict | None = None) -> list:
        fields = getattr(view, "ordering_fields", None) or []
        return [(item, item) if isinstance(item, str) else item for item in fields]

    def filter_queryset(self, request: Request, queryset: QuerySet, view: APIView) -> QuerySet:
        ordering = self.get_ordering(request, queryset, view) or list(queryset.query.order_by)
        if not ordering:
            return queryset
        ordering = list(ordering)
        if not {"pk", "-pk", "id", "-id"} & set(ordering):
            ordering.append("-pk" if ordering[0].startswith("-") else "pk")
        return queryset.order_by(*(_nulls_last(queryset, term) for term in ordering))

    def get_schema_operation_parameters(self, view: APIView) -> list[dict]:
        fields = [item if isinstance(item, str) else item[0] for item in getattr(view, "ordering_fields", None) or []]
        if not fields:
            return []
        return [
            {
                "name": self.ordering_param,
                "required": False,
                "in": "query",
                "description": "Sort by these fields, comma-separated; a leading - sorts descending. "
                f"One of: {', '.join(fields)}.",
                "schema": {"type": "string"},
            }
        ]


def _field_messages(value: object) -> object:
    if isinstance(value, str):
        return [str(value)]
    if isinstance(value, Mapping):
        return {str(key): _field_messages(item) for key, item in value.items()}
    if isinstance(value, Sequence):
        return [str(item) if isinstance(item, str) else _field_messages(item) for item in value]
    return [str(value)]


def _first_message(value: object) -> str:
    if isinstance(value, str):
        return str(value)
    if isinstance(value, Mapping):
        for item in value.values():
            if found := _first_message(item):
                return found
    elif isinstance(value, Sequence):
        for item in value:
            if found := _first_message(item):
                return found
    return ""


def is_error_body(data: object) -> bool:
    return isinstance(data, Mapping) and isinstance(data.get("error"), Mapping)


def error_body(status_code: int, data: object, *, code: str | None = None) -> dict[str, object]:
    """The error envelope for a response of ``status_code`` whose body was ``data`` (DRF's or a view's)."""
    if is_error_body(data):
        return dict(data)  # type: ignore[arg-type]
    message, fields = "", {}
    if isinstance(data, Mapping):
        if set(data) == {"detail"} or (set(data) == {"error"} and isinstance(data["error"], str)):
            message = str(next(iter(data.values())))
        else:
            fields = {str(key): _field_messages(value) for key, value in data.items()}
            non_field = [fields.pop(key) for key in _NON_FIELD_KEYS if key in fields]
            if non_field:
                message = _first_message(non_field)
            elif fields:
                name = next(iter(fields))
                message = f"{name}: {_first_message(fields[name])}"
    elif isinstance(data, Sequence) and not isinstance(data, str):
        message = "; ".join(str(item) for item in data)
    elif data is not None:
        message = str(data)
    return {
        "error": {
            "code": code or _STATUS_CODES.get(status_code, "error"),
            "message": message or "Request failed.",
            "fields": fields,
        }
    }


def _exception_code(exc: Exception) -> str | None:
    if isinstance(exc, exceptions.ValidationError):
        return "invalid"
    if isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        return codes if isinstance(codes, str) else None
    if isinstance(exc, Http404):
        return "not_found"
    return None


def error_envelope_exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF's exception handler, answering in the error envelope; also maps two Django errors to 4xx."""
    from rest_framework.views import exception_handler

    if isinstance(exc, RequestDataTooBig):
        exc = RequestTooLarge(f"The request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE:,} bytes.")
    elif isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(exc.message_dict if hasattr(exc, "error_dict") else exc.messages)
    response = exception_handler(exc, context)
    if response is not None:
        response.data = error_body(response.status_code, response.data, code=_exception_code(exc))
    return response


class ErrorEnvelopeJSONRenderer(JSONRenderer):
    """JSON; an error response a view built by hand is rendered in the error envelope too."""

    def render(self, data: object, accepted_media_type: str | None = None, renderer_context: Mapping | None = None):  # noqa: ANN201
        response = (renderer_context or {}).get("response")
        if response is not None and response.status_code >= 400 and not is_error_body(data):
            data = error_body(response.status_code, data)
        return super().render(data, accepted_media_type, renderer_context)


_ERROR_SCHEMA = {
    "type": "object",
    "description": "Every API error. A body may carry more keys beside it (the ingestion report).",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string", "example": "invalid"},
                "message": {"type": "string", "example": "threshold: Ensure this value is less than or equal to 1."},
                "fields": {
                    "type": "object",
                    "additionalProperties": True,
                    "description": "Messages per input field; empty when the error is not about one field.",
                },
            },
            "required": ["code", "message", "fields"],
        }
    },
    "required": ["error"],
}
_ERROR_DESCRIPTIONS = {
    "400": "Invalid input.",
    "401": "No valid credentials.",
    "403": "Not allowed for this user or client.",
    "404": "Not found.",
    "405": "Method not allowed.",
    "406": "Not acceptable: no representation matches the Accept header (the API answers JSON).",
    "409": "Conflict with the current state.",
    "413": "Request body too large.",
    "415": "Unsupported media type.",
    "422": "Unprocessable (an Idempotency-Key reused with another request).",
    "429": "Throttled; retry after the Retry-After header's seconds.",
    "503": "Temporarily unavailable.",
}


def error_responses_hook(result: dict, generator: object, request: object, public: bool) -> dict:  # noqa: FBT001
    """drf-spectacular postprocessing hook: document the error envelope on every operation.

    Each operation gets 400, 401, 403, 404, 406 and 429; those with a request body 413 and 415 too, those taking an
    Idempotency-Key 422 (the key reused with another request). Error codes a view documented itself keep their
    description and gain the envelope as their body. A 201 or 202 documents its Location header.
    """
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = _ERROR_SCHEMA
    reference = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for item in result.get("paths", {}).values():
        for method, operation in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            responses = operation.setdefault("responses", {})
            for accepted in ("201", "202"):
                if accepted in responses:
                    responses[accepted].setdefault("headers", {})["Location"] = {
                        "description": "The URL of the object created (a 202's: where to poll it; replayed, of the "
                        "one created first).",
                        "schema": {"type": "string", "format": "uri"},
                    }
            codes = ["400", "401", "403", "404", "406", "429"]
            if "requestBody" in operation:
                codes += ["413", "415"]
            parameters = operation.get("parameters", [])
            if any(p.get("in") == "header" and p.get("name") == "Idempotency-Key" for p in parameters):
                codes.append("422")
            codes += [code for code in responses if code in _ERROR_DESCRIPTIONS]
            for code in codes:
                response = responses.setdefault(code, {"description": _ERROR_DESCRIPTIONS[code]})
                response.setdefault("content", reference)
    return result


# --- Query parameters of list filters -------------------------------------------------------------------


def _invalid(name: str, message: str) -> exceptions.ValidationError:
    return exceptions.ValidationError({name: [message]})


def query_choice(params: Mapping[str, str], name: str, choices: Sequence[str]) -> str | None:
    """The parameter when it is one of ``choices``; None when absent or empty; 400 otherwise."""
    value = params.get(name)
    if value in (None, ""):
        return None
    if value not in choices:
        raise _invalid(name, f"{value!r} is not one of {', '.join(choices)}.")
    return value


def query_int(params: Mapping[str, str], name: str) -> int | None:
    """The parameter as a positive whole number (an id); None when absent or empty; 400 otherwise."""
    value = params.get(name)
    if value in (None, ""):
        return None
    if len(value) > 18 or not (value.isascii() and value.isdigit()) or int(value) < 1:
        raise _invalid(name, f"{value!r} is not an id (a positive whole number).")
    return int(value)


def query_float(params: Mapping[str, str], name: str, *, low: float, high: float) -> float | None:
    """The parameter as a number in ``[low, high]``; None when absent or empty; 400 otherwise."""
    value = params.get(name)
    if value in (None, ""):
        return None
    try:
        number = float(value)
    except ValueError:
        raise _invalid(name, f"{value!r} is not a number.") from None
    if not low <= number <= high:  # NaN fails this too
        raise _invalid(name, f"{value!r} is not between {low:g} and {high:g}.")
    return number


def query_bool(params: Mapping[str, str], name: str) -> bool | None:
    """``true``/``1``/``yes`` or ``false``/``0``/``no``; None when absent or empty; 400 otherwise."""
    value = params.get(name)
    if value in (None, ""):
        return None
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise _invalid(name, f"{value!r} is not true or false.")


# --- Errors outside DRF views (Django's handler404 and handler500) -----------------------------------------


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def not_found_handler(request: HttpRequest, exception: Exception) -> HttpResponse:
    """An unknown path under ``/api/`` answers 404 in the error envelope; elsewhere Django's page."""
    from django.views.defaults import page_not_found

    if not _is_api(request):
        return page_not_found(request, exception)
    body = error_body(404, {"detail": f"There is no API operation at {request.path}."})
    return JsonResponse(body, status=404)


def server_error_handler(request: HttpRequest) -> HttpResponse:
    """A crash under ``/api/`` answers 500 in the error envelope (no traceback); elsewhere Django's page."""
    from django.views.defaults import server_error

    if not _is_api(request):
        return server_error(request)
    return JsonResponse(
        error_body(500, {"detail": "Server error; it has been logged."}, code="server_error"), status=500
    )
