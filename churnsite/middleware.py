"""Requests whose path or query string holds a NUL character are refused before any view runs.

PostgreSQL cannot store or compare a text value with NUL (``\\x00``) in it: psycopg raises before the query is
sent, so ``?q=a%00b`` or ``/customers/by-external-id/a%00b/score`` would end in a 500 on the production database
(SQLite accepts them, which is why only PostgreSQL showed it). No id, filter or search term needs one.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse

__all__ = ["RejectNulCharactersMiddleware"]


class RejectNulCharactersMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        where = _nul_in_request(request)
        if where is None:
            return self.get_response(request)
        message = f"{where} holds a NUL character (%00), which no id, filter or text can contain."
        if request.path_info.startswith("/api/"):
            from churnsite.api import error_body

            fields = {where.removeprefix("query parameter "): [message]} if where.startswith("query") else {}
            return JsonResponse(error_body(400, fields or message, code="invalid"), status=400)
        return HttpResponseBadRequest(message, content_type="text/plain; charset=utf-8")


def _nul_in_request(request: HttpRequest) -> str | None:
    if "\x00" in request.path_info:
        return "the path"
    for name, values in request.GET.lists():
        if "\x00" in name or any("\x00" in value for value in values):
            return f"query parameter {name.replace(chr(0), '%00')}"
    return None
