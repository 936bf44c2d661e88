"""The API's throttles (DRF's, per client, per scope), which also say where the client stands.

Every throttled answer carries ``RateLimit-Limit`` (requests per window), ``RateLimit-Remaining`` and
``RateLimit-Reset`` (seconds until a request leaves the window), as the IETF draft "RateLimit header fields for
HTTP" names them, of the throttle nearest to refusing (ingestion and real-time scoring have their own, tighter
rates). The throttles note their state on the request; :class:`churnsite.middleware.RateLimitHeadersMiddleware`
writes the headers on the way out, also on a 429, beside ``Retry-After``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from rest_framework import throttling

if TYPE_CHECKING:
    from rest_framework.request import Request
    from rest_framework.views import APIView

__all__ = ["RATE_LIMIT_ATTRIBUTE", "AnonThrottle", "ScopeThrottle", "UserThrottle"]

RATE_LIMIT_ATTRIBUTE = "churn_rate_limit"


class _ReportsItsState:
    """A ``SimpleRateThrottle`` that notes (limit, remaining, reset seconds, allowed) on the Django request, keeping
    the throttle nearest to refusing."""

    def allow_request(self, request: Request, view: APIView) -> bool:
        allowed = super().allow_request(request, view)  # type: ignore[misc]
        if getattr(self, "key", None) is None or getattr(self, "history", None) is None:
            return allowed  # not applied to this request (no scope, or a throttle of anonymous callers)
        limit, duration = self.num_requests, self.duration  # type: ignore[attr-defined]
        remaining = max(limit - len(self.history), 0)  # type: ignore[attr-defined]
        oldest = self.history[-1] if self.history else self.now  # type: ignore[attr-defined]
        reset = max(math.ceil(duration - (self.now - oldest)), 1)  # type: ignore[attr-defined]
        target = request._request  # noqa: SLF001 - the Django request, which the middleware sees
        noted = getattr(target, RATE_LIMIT_ATTRIBUTE, None)
        # The throttle that refused (a 429's Retry-After is its), else the one with the fewest requests left.
        if noted is None or (allowed, remaining) < (noted[3], noted[1]):
            setattr(target, RATE_LIMIT_ATTRIBUTE, (limit, remaining, reset, allowed))
        return allowed


class AnonThrottle(_ReportsItsState, throttling.AnonRateThrottle):
    """Anonymous callers, by address (``API_THROTTLE_ANON``)."""


class UserThrottle(_ReportsItsState, throttling.UserRateThrottle):
    """Each user or service client (``API_THROTTLE_USER``)."""


class ScopeThrottle(_ReportsItsState, throttling.ScopedRateThrottle):
    """Each client per view scope: ingestion, real-time scoring."""
