"""REST views of the customers app: customers with their timeline, the CSV export, and ingestion.

All endpoints need a staff user (the project default), except ingestion, which service clients may use too.
"""

from __future__ import annotations

import shutil
import tempfile
from typing import BinaryIO

from django.conf import settings
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import NotFound, ParseError, UnsupportedMediaType, ValidationError
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.parsers import BaseParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from churnsite.api import query_bool
from churnsite.permissions import IsStaffOrServiceClient
from customers.exports import customers_csv_lines
from customers.importers import FORMATS, KINDS, ImportFileError, detect_format
from customers.ingest import import_file, import_options_from_settings
from customers.selectors import customer_profile_changes, customer_timeline, customers_search
from customers.serializers import CustomerDetailSerializer, CustomerSerializer, ImportReportSerializer

__all__ = ["CustomerDetailView", "CustomerExportView", "CustomerListView", "IngestView"]

_TRUE = {"1", "true", "yes"}
_FALSE = {"0", "false", "no"}
_BODY_FORMATS = {
    "application/json": "json",
    "application/x-ndjson": "jsonl",
    "application/jsonl": "jsonl",
    "application/x-jsonlines": "jsonl",
    "text/csv": "csv",
}
_TIMELINE_DEFAULT, _TIMELINE_MAX = 100, 1000
_SEARCH_MAX_LENGTH = 200
_PROFILE_HISTORY_LIMIT = 100
_MULTIPART_SLACK = 64 * 1024  # form fields and part headers around an uploaded file of the largest allowed size


_CUSTOMER_FILTERS = [
    OpenApiParameter("segment", str, description="Exact segment."),
    OpenApiParameter("country", str, description="Exact country code."),
    OpenApiParameter(
        "churned", bool, description="Only customers marked churned (true), or only those not marked churned (false)."
    ),
    OpenApiParameter("is_minimal", bool, description="Only customers created from an order, event or message row."),
    OpenApiParameter("q", str, description="Text in the external id, email or name (at most 200 characters)."),
    OpenApiParameter("marketing_consent", bool, description="Only customers who gave (true) or did not give consent."),
    OpenApiParameter("opted_out", bool, description="Only customers who opted out (true) or did not (false)."),
]


def _customers_from_query(request: Request):  # noqa: ANN202 - a QuerySet[Customer]
    params = request.query_params
    if len(params.get("q") or "") > _SEARCH_MAX_LENGTH:
        # Nobody types more into a search box, and SQLite refuses LIKE patterns above 50,000 bytes (a 500).
        raise ValidationError({"q": [f"at most {_SEARCH_MAX_LENGTH} characters"]})
    customers = customers_search(
        segment=params.get("segment"),
        country=params.get("country"),
        churned=query_bool(params, "churned"),
        is_minimal=query_bool(params, "is_minimal"),
        text=params.get("q"),
    )
    if (consent := query_bool(params, "marketing_consent")) is not None:
        customers = customers.filter(marketing_consent=consent)
    if (opted_out := query_bool(params, "opted_out")) is not None:
        customers = customers.filter(opted_out_at__isnull=not opted_out)
    return customers


@extend_schema(parameters=_CUSTOMER_FILTERS)
class CustomerListView(generics.ListAPIView):
    """``GET /api/v1/customers/?segment=&country=&churned=&is_minimal=&q=&page=``: paginated, oldest first."""

    staff_permissions = {"GET": ("customers.view_customer",)}

    serializer_class = CustomerSerializer
    ordering_fields = ["id", "external_id", "name", "signed_up_at", "order_count", "last_order_at", "created_at"]

    def get_queryset(self):  # noqa: ANN201
        return _customers_from_query(self.request)


@extend_schema(
    parameters=[OpenApiParameter("timeline_limit", int, description="Timeline entries, newest first (0-1000).")]
)
class CustomerDetailView(generics.RetrieveAPIView):
    """``GET /api/v1/customers/<id>/?timeline_limit=100``: the customer, its attributes, its profile history (the
    newest 100 changes, with the values before each) and its timeline."""

    staff_permissions = {"GET": ("customers.view_customer",)}

    serializer_class = CustomerDetailSerializer

    def retrieve(self, request: Request, *args: object, **kwargs: object) -> Response:
        customer = self.get_object()
        try:
            limit = int(request.query_params.get("timeline_limit", _TIMELINE_DEFAULT))
        except ValueError:
            raise ValidationError({"timeline_limit": ["must be a whole number"]}) from None
        if not 0 <= limit <= _TIMELINE_MAX:
            raise ValidationError({"timeline_limit": [f"must be from 0 to {_TIMELINE_MAX}"]})
        timeline = customer_timeline(customer=customer, limit=limit)
        history = customer_profile_changes(customer_id=customer.pk, limit=_PROFILE_HISTORY_LIMIT)
        context = {"request": request, "timeline": timeline, "profile_history": history}
        serializer = self.get_serializer(customer, context=context)
        return Response(serializer.data)

    def get_queryset(self):  # noqa: ANN201
        return customers_search()


class CustomerExportView(APIView):
    """``GET /api/v1/customers/export.csv`` with the list filters: streamed, formulas neutralised."""

    staff_permissions = {"GET": ("customers.view_customer",)}

    def perform_content_negotiation(self, request: Request, force: bool = False):  # noqa: ANN201
        # The body is CSV whatever the renderers offer, so "Accept: text/csv" must not end in a 406; an error
        # (a bad filter) goes out in the JSON error envelope even to a client that asked for CSV.
        return super().perform_content_negotiation(request, force=True)

    @extend_schema(
        parameters=_CUSTOMER_FILTERS,
        responses={(200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="customers.csv")},
    )
    def get(self, request: Request) -> StreamingHttpResponse:
        lines = customers_csv_lines(_customers_from_query(request).iterator(chunk_size=2000))
        response = StreamingHttpResponse(lines, content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="customers.csv"'
        return response


def _unread_body_parser(media: str) -> type[BaseParser]:
    """A parser that accepts a body format of the ingestion and leaves the body unread: the view streams it
    itself. Without one, a staff session's CSRF check (which reads ``request.POST``) made DRF look for a parser
    and answer 415 to a JSON, JSON lines or CSV body."""

    class UnreadBody(BaseParser):
        media_type = media

        def parse(self, stream, media_type=None, parser_context=None) -> dict[str, object]:  # noqa: ANN001
            return {}

    return UnreadBody


class _FormatIsAnImportOption(DefaultContentNegotiation):
    """``?format=`` of an ingestion names the format of the rows sent, not of the response (DRF would look for a
    renderer of that name and answer 404)."""

    class settings:  # noqa: N801 - stands in for DRF's api_settings, which the base class reads this one name of
        URL_FORMAT_OVERRIDE = None


class IngestView(APIView):
    """``POST /api/v1/ingest/<kind>``: import rows sent as the body or as an uploaded file.

    Body: a JSON array (``application/json``), JSON lines (``application/x-ndjson``) or CSV
    (``text/csv``); options in the query string. Upload: ``multipart/form-data`` with the file in
    ``file`` (format from its name, or ``format``); options in the query string or as form fields (those win). Options: ``map``
    (repeatable ``FIELD=COLUMN``), ``label_col``, ``positive``, ``drop_col`` (repeatable), ``sheet``,
    ``delimiter``, ``time_zone``, ``dry_run``.

    Responses: 200 with the summary and every row error (up to 1,000) when the file was read and at
    least one row was imported or already present; 400 when the file cannot be read at all or
    every row was rejected; 413 above ``CHURN_INGEST_MAX_BYTES``; 415 for other content types.
    """

    parser_classes = [MultiPartParser, *(_unread_body_parser(media) for media in _BODY_FORMATS)]
    permission_classes = [IsStaffOrServiceClient]
    throttle_scope = "ingest"
    content_negotiation_class = _FormatIsAnImportOption

    def get_staff_permissions(self, request: Request) -> tuple[str, ...]:
        """Staff add rows of the kind imported, and customers: a customers import adds and changes them, and an
        import of orders, events or messages adds a placeholder customer for an unknown one."""
        model = {"customers": "customer", "orders": "order", "events": "event", "messages": "message"}.get(
            str(self.kwargs.get("kind")), "customer"
        )
        if model == "customer":
            return ("customers.add_customer", "customers.change_customer")
        return (f"customers.add_{model}", "customers.add_customer")

    @extend_schema(
        parameters=[
            OpenApiParameter("kind", str, OpenApiParameter.PATH, enum=list(KINDS), description="What the rows are."),
            OpenApiParameter("dry_run", bool, description="Check every row and report, write nothing."),
            OpenApiParameter("map", str, many=True, description="FIELD=COLUMN, repeatable."),
            OpenApiParameter("label_col", str),
            OpenApiParameter("positive", str),
            OpenApiParameter("drop_col", str, many=True),
            OpenApiParameter(
                "time_zone", str, description="IANA zone of times without an offset (default: CHURN_IMPORT_TIME_ZONE)."
            ),
            OpenApiParameter("sheet", str, description="The sheet of an xlsx upload to read (default: the first)."),
            OpenApiParameter("delimiter", str, description="CSV delimiter, one character (default: detected)."),
        ],
        request={
            "application/json": {"type": "array", "items": {"type": "object", "additionalProperties": True}},
            "application/x-ndjson": {
                "type": "string",
                "description": "JSON lines: one object per line.",
                "example": '{"external_id": "c1", "email": "a@example.com"}\n{"external_id": "c2"}\n',
            },
            "text/csv": {
                "type": "string",
                "description": "CSV with a header row.",
                "example": "external_id,email\nc1,a@example.com\n",
            },
            "multipart/form-data": {
                "type": "object",
                "properties": {
                    "file": {"type": "string", "format": "binary"},
                    "format": {"type": "string", "enum": list(FORMATS)},
                },
                "required": ["file"],
            },
        },
        responses={
            200: OpenApiResponse(ImportReportSerializer, description="The import summary with every row error."),
            # The error envelope (added to every operation); when every row was rejected the report's keys too.
            400: OpenApiResponse(description="Unreadable file, or every row rejected (with the report's errors)."),
            413: OpenApiResponse(description="Larger than CHURN_INGEST_MAX_BYTES."),
        },
        description=(
            "Rows as a JSON array, JSON lines (application/x-ndjson), CSV (text/csv) or an uploaded file "
            "(multipart/form-data: CSV, JSON, JSON lines, xlsx); options in the query string or, for an upload, "
            "as form fields."
        ),
    )
    def post(self, request: Request, kind: str) -> Response:
        if kind not in KINDS:
            raise NotFound(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")
        limit = settings.CHURN_INGEST_MAX_BYTES
        content_type = (request.content_type or "").split(";")[0].strip().lower()
        declared = request.META.get("CONTENT_LENGTH") or "0"
        if content_type == "multipart/form-data" and declared.isdigit() and int(declared) > limit + _MULTIPART_SLACK:
            # Refused before Django reads the upload (it would spool the whole file to disk first).
            return _too_large(limit)
        with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024) as spool:
            if content_type == "multipart/form-data":
                upload = request.FILES.get("file")
                if upload is None:
                    raise ParseError("send the file in the multipart field 'file'")
                if upload.size > limit:
                    return _too_large(limit)
                # Options may come in the query string, as for a body, or as form fields (which win).
                params = request.query_params.copy()
                for key in request.data:
                    if key != "file":
                        params.setlist(key, request.data.getlist(key))
                source = upload.name or "upload"
                shutil.copyfileobj(upload, spool)
                try:
                    fmt = params.get("format") or detect_format(source)
                except ImportFileError as exc:
                    raise ValidationError({"format": [str(exc)]}) from None
            else:
                fmt = _BODY_FORMATS.get(content_type)
                if fmt is None:
                    raise UnsupportedMediaType(content_type or "(none)")
                named = request.query_params.get("format")
                if named and named != fmt:  # the body's type decides; a format= that differs was silently ignored
                    raise ValidationError(
                        {"format": [f"the body is sent as {content_type}, which reads as {fmt}, not {named}"]}
                    )
                if declared.isdigit() and int(declared) > limit:
                    return _too_large(limit)
                if not _copy_limited(request.stream, spool, limit):
                    return _too_large(limit)
                params = request.query_params
                source = "api"
            if fmt not in FORMATS:
                raise ValidationError({"format": [f"must be one of {', '.join(FORMATS)}"]})
            if params.get("positive") is not None and not params.get("label_col"):
                # Without it the labels would be imported as a plain attribute, and a misspelt label_col lose them.
                raise ValidationError({"positive": ["names a value of the label column: give label_col too"]})
            spool.seek(0)
            try:
                options = import_options_from_settings(
                    kind=kind,
                    format=fmt,
                    field_map=_field_map(params.getlist("map")),
                    label_column=params.get("label_col") or None,
                    positive_label=params.get("positive"),
                    drop_columns=frozenset(params.getlist("drop_col")),
                    sheet=params.get("sheet") or None,
                    delimiter=params.get("delimiter") or None,
                    time_zone=params.get("time_zone") or None,
                )
                result = import_file(
                    stream=spool,  # type: ignore[arg-type]
                    source=source,
                    options=options,
                    dry_run=bool(query_bool(params, "dry_run")),
                    started_by=request.user.get_username(),
                )
            except ImportFileError as exc:
                if exc.option is not None:  # about one option: name it, as every other bad parameter is
                    raise ValidationError({exc.option: [str(exc)]}) from None
                return Response({"error": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        report = result.as_dict()
        if result.rows_rejected and not (result.rows_imported or result.rows_unchanged):
            # The report stays whole beside the error envelope: the row errors are what the caller needs.
            message = f"every row was rejected ({result.rows_rejected}); see errors"
            error = {"code": "rows_rejected", "message": message, "fields": {}}
            return Response({"error": error, **report}, status=status.HTTP_400_BAD_REQUEST)
        return Response(report)


def _field_map(pairs: list[str]) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for pair in pairs:
        name, sep, column = pair.partition("=")
        if not sep or not name or not column:
            raise ValidationError({"map": [f"map={pair!r}: write FIELD=COLUMN"]})
        mapping[name] = column
    return mapping


def _copy_limited(source: BinaryIO | None, target: BinaryIO, limit: int) -> bool:
    """Copy the request body; False as soon as it exceeds ``limit`` bytes."""
    if source is None:
        return True
    copied = 0
    while chunk := source.read(1024 * 1024):
        copied += len(chunk)
        if copied > limit:
            return False
        target.write(chunk)
    return True


def _too_large(limit: int) -> Response:
    return Response(
        {"error": f"the body is larger than {limit:,} bytes (CHURN_INGEST_MAX_BYTES); split it or use churn_import"},
        status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    )
