"""The Idempotency-Key header of the API's POSTs: the first request runs, a replay gets the stored response.

The records live in the alerts app (``alerts.services.idempotent_request``, one row per user and key); this module
is the view side that every app's POST views share, with the header's OpenAPI description.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from django.http import QueryDict
from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

IDEMPOTENCY_HEADER = "Idempotency-Key"
IDEMPOTENCY_PARAMETER = OpenApiParameter(
    IDEMPOTENCY_HEADER,
    str,
    OpenApiParameter.HEADER,
    description=(
        "Up to 255 characters; a repeat with the same key returns the first response (Idempotent-Replayed: true) "
        "and does nothing again; the same key with another request is a 422 (a JSON body counts by its content: "
        "spacing and the order of its keys may differ). A request refused with a 400 is not kept: the corrected "
        "request may use its key."
    ),
)


def idempotent_response(
    request: Request, handler: Callable[[], tuple[int, object]], *, created_view: str | None = None
) -> Response:
    """Honour the Idempotency-Key header around ``handler`` (which returns a status and a body).

    With ``created_view`` (the URL name of the created object's detail), a 201 or 202 whose body has an ``id``
    carries a ``Location`` header with that object's URL (a 202's: where to poll it), a replay as the first answer."""
    from alerts.services import IdempotencyKeyReused, idempotent_request

    key = request.headers.get(IDEMPOTENCY_HEADER, "").strip()
    if not key:
        code, body = handler()
        return with_location(request, Response(body, status=code), created_view)
    if len(key) > 255:
        return Response({"detail": f"{IDEMPOTENCY_HEADER} is longer than 255 characters"}, status=400)
    raw = request.body  # read first: DRF parses the data from this copy, and the raw bytes stay readable
    try:
        stored = idempotent_request(
            user=request.user,
            key=key,
            method=request.method,
            path=request.path,
            body=canonical_body(request.data, raw),
            handler=handler,
            also_matches=(raw,),
        )
    except IdempotencyKeyReused as error:
        return Response({"detail": str(error)}, status=status.HTTP_422_UNPROCESSABLE_ENTITY)
    response = Response(stored.body, status=stored.status)
    if stored.replayed:
        response["Idempotent-Replayed"] = "true"
    return with_location(request, response, created_view)


def with_location(request: Request, response: Response, created_view: str | None) -> Response:
    accepted = (status.HTTP_201_CREATED, status.HTTP_202_ACCEPTED)
    if created_view and response.status_code in accepted and isinstance(response.data, dict):
        created_id = response.data.get("id")
        if isinstance(created_id, int):
            response["Location"] = request.build_absolute_uri(reverse(created_view, args=[created_id]))
    return response


def canonical_body(data: object, raw: bytes) -> bytes:
    """The request's content as one byte string that a retry of it gives again, whatever its serialisation.

    A client that retries may serialise the same JSON differently (another key order, other spacing; a form's
    fields in another order), so the parsed data is written in one canonical way: sorted keys, no spaces, and a
    form's fields as lists of values. Data that is not plain JSON (an uploaded file) is compared as the raw bytes.
    """
    if isinstance(data, QueryDict):
        data = {name: data.getlist(name) for name in data}
    try:
        return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    except (TypeError, ValueError):
        return raw
