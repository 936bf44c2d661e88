from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from churnsite.health import system_health


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """200 when the database answers, 503 otherwise; the body says the state of each part."""
    healthy, states = system_health()
    return JsonResponse({"status": "ok" if healthy else "error", **states}, status=200 if healthy else 503)
