"""Who may call which API operation.

Two roles: staff users (``is_staff``) may use an operation when they hold the Django model permissions it names,
as in the admin (superusers hold all); service clients (members of the ``service-clients`` group, created by
``manage.py churn_api_client NAME``) may read scores and alerts, ingest data and request a real-time score.
Everything else is staff only, and the project default (``REST_FRAMEWORK["DEFAULT_PERMISSION_CLASSES"]``) is
``IsStaff``: a view that names no permission denies service clients and anonymous callers.

A view names what staff need in ``staff_permissions`` (``{"GET": ("customers.view_customer",), ...}``; HEAD and
OPTIONS as GET) or, when it depends on the request, in ``get_staff_permissions(request)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rest_framework.permissions import SAFE_METHODS, BasePermission

if TYPE_CHECKING:  # DRF imports the permission classes while rest_framework.views is still loading
    from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
    from rest_framework.request import Request
    from rest_framework.views import APIView

__all__ = [
    "SERVICE_CLIENTS_GROUP",
    "IsStaff",
    "IsStaffOrServiceClient",
    "IsStaffOrServiceClientReadOnly",
    "is_service_client",
    "staff_permissions",
]

SERVICE_CLIENTS_GROUP = "service-clients"


def _is_staff(user: AbstractBaseUser | AnonymousUser) -> bool:
    return bool(user and user.is_authenticated and user.is_active and user.is_staff)


def staff_permissions(request: Request, view: APIView) -> tuple[str, ...]:
    """The Django permissions a staff user needs for this request (see the module's docstring)."""
    getter = getattr(view, "get_staff_permissions", None)
    if getter is not None:
        return tuple(getter(request))
    method = "GET" if request.method in ("HEAD", "OPTIONS") else request.method
    return tuple(getattr(view, "staff_permissions", {}).get(method, ()))


def _staff_may(permission: BasePermission, request: Request, view: APIView) -> bool:
    """Staff holding the view's permissions for this request; a refusal names the missing ones."""
    if not _is_staff(request.user):
        return False
    missing = [name for name in staff_permissions(request, view) if not request.user.has_perm(name)]
    if missing:
        permission.message = f"This operation needs the permission {', '.join(missing)}."
        return False
    return True


def is_service_client(user: AbstractBaseUser | AnonymousUser) -> bool:
    """True for an active, authenticated member of the service-clients group."""
    if not (user and user.is_authenticated and user.is_active):
        return False
    return user.groups.filter(name=SERVICE_CLIENTS_GROUP).exists()  # type: ignore[union-attr]


class IsStaff(BasePermission):
    """Staff users holding the view's permissions (the project default)."""

    message = "This operation is for staff users."

    def has_permission(self, request: Request, view: APIView) -> bool:
        return _staff_may(self, request, view)


class IsStaffOrServiceClient(BasePermission):
    """Staff users and service clients, for every method the view offers."""

    message = "This operation is for staff users and service clients."

    def has_permission(self, request: Request, view: APIView) -> bool:
        if is_service_client(request.user) and not _is_staff(request.user):
            return True
        return _staff_may(self, request, view)


class IsStaffOrServiceClientReadOnly(BasePermission):
    """Staff users for every method; service clients for GET, HEAD and OPTIONS only."""

    message = "Service clients may only read here; changes are for staff users."

    def has_permission(self, request: Request, view: APIView) -> bool:
        if _is_staff(request.user):
            return _staff_may(self, request, view)
        return request.method in SAFE_METHODS and is_service_client(request.user)
