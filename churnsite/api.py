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

import io
from collections.abc import Mapping, Sequence
from typing import IO, TYPE_CHECKING

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from rest_framework import exceptions, status
from rest_framework.filters import OrderingFilter
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import JSONParser
from rest_framework.renderers import JSONRenderer

if TYPE_CHECKING:  # DRF loads these classes while rest_framework.views is still importing
    from rest_framework.request import Request
    from rest_framework.response import Response
    from rest_framework.views import APIView

__all__ = [
    "CappedPageNumberPagination",
    "ErrorEnvelopeJSONRenderer",
    "LimitedJSONParser",
    "RequestTooLarge",
    "StableOrderingFilter",
    "error_body",
    "error_envelope_exception_handler",
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


class CappedPageNumberPagination(PageNumberPagination):
    """``?page=`` and ``?page_size=`` (default ``PAGE_SIZE``, at most ``API_MAX_PAGE_SIZE``)."""

    page_size_query_param = "page_size"

    @property
    def max_page_size(self) -> int:  # type: ignore[override]
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
        return queryset.order_by(*ordering)

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
    Idempotency-Key 422 (the key reused with another request). Error codes a
    view documented itself keep their description and gain the envelope as their body.
    """
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = _ERROR_SCHEMA
    reference = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for item in result.get("paths", {}).values():
        for method, operation in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            responses = operation.setdefault("responses", {})
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
