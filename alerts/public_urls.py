"""Pages for customers (no login): the one-click unsubscribe link of retention emails."""

from __future__ import annotations

from django.urls import path

from alerts.views import unsubscribe_view

app_name = "alerts"

urlpatterns = [path("unsubscribe/<str:token>/", unsubscribe_view, name="unsubscribe")]
