"""Project-wide writes: API service clients and their tokens."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import ValidationError
from django.db import transaction
from rest_framework.authtoken.models import Token

from churnsite.permissions import SERVICE_CLIENTS_GROUP

__all__ = ["ApiClientCredentials", "ApiClientError", "api_client_create", "api_client_revoke"]


class ApiClientError(ValueError):
    """The name cannot be used for a service client (it is invalid, or belongs to a person)."""


@dataclass(frozen=True)
class ApiClientCredentials:
    username: str
    token: str
    created: bool
    rotated: bool


def _service_client(name: str):  # noqa: ANN202 - the project's user model
    user_model = get_user_model()
    longest = user_model._meta.get_field(user_model.USERNAME_FIELD).max_length
    try:
        UnicodeUsernameValidator()(name)
    except ValidationError as error:
        raise ApiClientError(f"{name!r} is not a valid user name: {' '.join(error.messages)}") from None
    if longest is not None and len(name) > longest:
        raise ApiClientError(f"the name is {len(name)} characters long; at most {longest} fit in a user name")
    group, _ = Group.objects.get_or_create(name=SERVICE_CLIENTS_GROUP)
    user = user_model.objects.select_for_update().filter(username=name).first()
    if user is None:
        user = user_model(username=name, is_staff=False, is_superuser=False, is_active=True)
        user.set_unusable_password()  # a service client never logs in to the admin
        user.save()
        user.groups.add(group)
        return user, True
    if user.is_staff or user.is_superuser or not user.groups.filter(pk=group.pk).exists():
        raise ApiClientError(f"user {name!r} exists and is not a service client; choose another name")
    return user, False


@transaction.atomic
def api_client_create(*, name: str, rotate: bool = False) -> ApiClientCredentials:
    """Create the service client ``name`` (a user in the service-clients group) and its API token.

    Idempotent: for an existing client the existing token is returned unless ``rotate``, which replaces it
    (the old one stops working at once). A revoked client is reactivated. A staff user or any other user that
    is not a service client is never turned into one.
    """
    user, created = _service_client(name)
    if not user.is_active:
        user.is_active = True
        user.save(update_fields=["is_active"])
    token = Token.objects.filter(user=user).first()
    rotated = token is not None and rotate
    if rotated:
        token.delete()
        token = None
    if token is None:
        token = Token.objects.create(user=user)
    return ApiClientCredentials(username=user.get_username(), token=token.key, created=created, rotated=rotated)


@transaction.atomic
def api_client_revoke(*, name: str) -> bool:
    """Delete the client's token and deactivate it; False when there was no such client."""
    user = get_user_model().objects.filter(username=name, groups__name=SERVICE_CLIENTS_GROUP, is_staff=False).first()
    if user is None:
        return False
    Token.objects.filter(user=user).delete()
    user.is_active = False
    user.save(update_fields=["is_active"])
    return True
