"""REST routes of the customers app, mounted under /api/v1/."""

from __future__ import annotations

urlpatterns: list = []
