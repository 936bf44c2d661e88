"""Staff users for tests: the API and the admin check Django model permissions, so a test's staff user holds them."""

from __future__ import annotations

from django.contrib.auth.models import Permission

APPS = ("customers", "predictions", "alerts")


def grant_app_permissions(user, *, apps: tuple[str, ...] = APPS):  # noqa: ANN001, ANN201 - the project's user model
    """Give ``user`` every model permission of ``apps`` (by default the project's three) and return it."""
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label__in=apps))
    return type(user).objects.get(pk=user.pk)  # a fresh instance: permissions are cached per instance
