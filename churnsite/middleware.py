"""Requests whose path or query string holds a NUL character are refused before any view runs (a cookie holding
one is dropped).

PostgreSQL cannot store or compare a text value with NUL (``\\x00``) in it: psycopg raises before the query is
sent, so ``?q=a%00b`` or ``/customers/by-external-id/a%00b/score`` would end in a 500 on the production database
(SQLite accepts them, which is why only PostgreSQL showed it). No id, filter or search term needs one.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, HttpResponseRedirect, JsonResponse
from django.middleware.common import CommonMiddleware
from django.utils.http import escape_leading_slashes

__all__ = ["ApiCommonMiddleware", "RateLimitHeadersMiddleware", "RejectNulCharactersMiddleware"]


class RejectNulCharactersMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if any("\x00" in name or "\x00" in value for name, value in request.COOKIES.items()):
            # Django unquotes a cookie's octal escapes ("\000" on the wire): a session key with a NUL would reach
            # the session lookup on PostgreSQL (a 500). No cookie of ours holds one: such a cookie is dropped, as
            # if it had not been sent.
            request.COOKIES = {
                name: value for name, value in request.COOKIES.items() if "\x00" not in name and "\x00" not in value
            }
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


class RateLimitHeadersMiddleware:
    """``RateLimit-Limit``, ``RateLimit-Remaining`` and ``RateLimit-Reset`` on every answer an API throttle counted
    (noted on the request by ``churnsite.throttling``), so that a client can slow down before a 429."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        from churnsite.throttling import RATE_LIMIT_ATTRIBUTE

        response = self.get_response(request)
        noted = getattr(request, RATE_LIMIT_ATTRIBUTE, None)
        if noted is not None:
            limit, remaining, reset, _ = noted
            response.headers.setdefault("RateLimit-Limit", str(limit))
            response.headers.setdefault("RateLimit-Remaining", str(remaining))
            response.headers.setdefault("RateLimit-Reset", str(reset))
        return response


class _PermanentRedirectKeepingTheMethod(HttpResponseRedirect):
    status_code = 308


class ApiCommonMiddleware(CommonMiddleware):
    """Django's ``CommonMiddleware``, except that a write (POST, PUT, PATCH, DELETE) to an API path that lacks its
    trailing slash is redirected with a 308, which clients follow with the same method and body.

    Django answered 301, which clients follow with a GET: ``POST /api/v1/alert-rules`` listed the rules with a 200
    and created nothing (with DEBUG on it raised a RuntimeError, a 500). Reads keep the 301."""

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        if (
            response.status_code == 404
            and request.method not in ("GET", "HEAD")
            and request.path.startswith("/api/")
            and self.should_redirect_with_slash(request)
        ):
            path = escape_leading_slashes(request.get_full_path(force_append_slash=True))
            return _PermanentRedirectKeepingTheMethod(path)
        return super().process_response(request, response)
