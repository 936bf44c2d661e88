from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from churnsite.health import system_health
from churnsite.services import login_failure_record, login_failures_clear, login_locked_out


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """200 when the database answers, 503 otherwise; the body says the state of each part."""
    healthy, states = system_health()
    return JsonResponse({"status": "ok" if healthy else "error", **states}, status=200 if healthy else 503)


def admin_login(request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
    """The admin's login page, with failed attempts counted per account and address (staff sessions also drive the
    API, so guessing a password must not run as fast as the server answers). Refused attempts answer 429."""
    if request.method != "POST":
        return admin.site.login(request, extra_context)
    username = str(request.POST.get("username", ""))
    address = str(request.META.get("REMOTE_ADDR", ""))
    if login_locked_out(username=username, address=address):
        minutes = max(1, round(settings.ADMIN_LOGIN_LOCKOUT_SECONDS / 60))
        return HttpResponse(
            f"Too many failed logins for this account: try again in up to {minutes} minutes.",
            status=429,
            content_type="text/plain; charset=utf-8",
            headers={"Retry-After": str(settings.ADMIN_LOGIN_LOCKOUT_SECONDS)},
        )
    response = admin.site.login(request, extra_context)
    # Logged in by this request: the admin redirects. A client that holds a session already (another staff
    # member's) is authenticated whatever this attempt gave, so that cannot tell.
    if response.status_code == 302:
        login_failures_clear(username=username, address=address)
    else:
        login_failure_record(username=username, address=address)
    return response
