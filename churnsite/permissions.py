"""Who may call which API operation.

Two roles: staff users (``is_staff``) may do everything; service clients (members of the
``service-clients`` group, created by ``manage.py churn_api_client NAME``) may read scores and
alerts, ingest data and request a real-time score. Everything else is staff only, and the
project default (``REST_FRAMEWORK["DEFAULT_PERMISSION_CLASSES"]``) is ``IsStaff``: a view that
names no permission denies service clients and anonymous callers.
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
]

SERVICE_CLIENTS_GROUP = "service-clients"


def _is_staff(user: AbstractBaseUser | AnonymousUser) -> bool:
    return bool(user and user.is_authenticated and user.is_active and user.is_staff)


def is_service_client(user: AbstractBaseUser | AnonymousUser) -> bool:
    """True for an active, authenticated member of the service-clients group."""
    if not (user and user.is_authenticated and user.is_active):
        return False
    return user.groups.filter(name=SERVICE_CLIENTS_GROUP).exists()  # type: ignore[union-attr]


class IsStaff(BasePermission):
    """Staff users only (the project default)."""

    message = "This operation is for staff users."

    def has_permission(self, request: Request, view: APIView) -> bool:
        return _is_staff(request.user)


class IsStaffOrServiceClient(BasePermission):
    """Staff users and service clients, for every method the view offers."""

    message = "This operation is for staff users and service clients."

    def has_permission(self, request: Request, view: APIView) -> bool:
        return _is_staff(request.user) or is_service_client(request.user)


class IsStaffOrServiceClientReadOnly(BasePermission):
    """Staff users for every method; service clients for GET, HEAD and OPTIONS only."""

    message = "Service clients may only read here; changes are for staff users."

    def has_permission(self, request: Request, view: APIView) -> bool:
        if _is_staff(request.user):
            return True
        return request.method in SAFE_METHODS and is_service_client(request.user)
