"""Project-wide writes: API service clients and their tokens; failed staff logins counted against guessing."""

from __future__ import annotations

import hashlib
import logging
import unicodedata
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import transaction
from rest_framework.authtoken.models import Token

from churnsite.permissions import SERVICE_CLIENTS_GROUP

__all__ = [
    "ApiClientCredentials",
    "ApiClientError",
    "api_client_create",
    "api_client_revoke",
    "login_failure_record",
    "login_failures_clear",
    "login_locked_out",
]

logger = logging.getLogger(__name__)
# A login may fail this many times as often from everywhere together as from one address, before the account
# itself is locked for the window: guessing from many addresses is slowed too, and one address cannot lock it.
ACCOUNT_FAILURE_FACTOR = 5


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


# --- Failed staff logins --------------------------------------------------------------------------------------------


def _login_keys(username: str, address: str) -> tuple[str, str]:
    # As the login form reads it (NFKC: "ｒoot" logs in as "root"), and without case: every spelling of an
    # account shares its counters.
    name = unicodedata.normalize("NFKC", username).strip().casefold()
    user = hashlib.sha256(name.encode("utf-8")).hexdigest()[:32]
    return f"login-failures:{user}:{address}", f"login-failures:{user}"


def _limits() -> tuple[int, int]:
    limit = settings.ADMIN_LOGIN_MAX_FAILURES
    return limit, limit * ACCOUNT_FAILURE_FACTOR


def login_locked_out(*, username: str, address: str) -> bool:
    """Whether logins as ``username`` are refused for now: ``ADMIN_LOGIN_MAX_FAILURES`` failures from ``address``
    within ``ADMIN_LOGIN_LOCKOUT_SECONDS``, or five times as many from anywhere. Counters live in the default cache
    (Redis in production, shared by every process); if it cannot be read, logins are not refused."""
    pair, account = _login_keys(username, address)
    try:
        counts = cache.get_many([pair, account])
    except Exception:  # noqa: BLE001 - a cache outage must not lock staff out
        logger.warning("login failures could not be read from the cache; not limiting logins", exc_info=True)
        return False
    limit, account_limit = _limits()
    return counts.get(pair, 0) >= limit or counts.get(account, 0) >= account_limit


def login_failure_record(*, username: str, address: str) -> None:
    """Count a failed login as ``username`` from ``address``; each count expires after the lockout window."""
    timeout = settings.ADMIN_LOGIN_LOCKOUT_SECONDS
    for key in _login_keys(username, address):
        try:
            if not cache.add(key, 1, timeout):
                cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.add(key, 1, timeout)
        except Exception:  # noqa: BLE001
            logger.warning("a failed login could not be counted in the cache", exc_info=True)
            return


def login_failures_clear(*, username: str, address: str) -> None:
    """Forget the failures from ``address`` after a successful login (those from elsewhere still count)."""
    try:
        cache.delete(_login_keys(username, address)[0])
    except Exception:  # noqa: BLE001
        logger.warning("login failures could not be cleared in the cache", exc_info=True)
