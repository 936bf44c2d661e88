"""manage.py churn_api_client NAME: a service client user with a token that works, rotates and revokes."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from churnsite.permissions import SERVICE_CLIENTS_GROUP

pytestmark = pytest.mark.django_db


def _run(*args: str) -> str:
    out = io.StringIO()
    call_command("churn_api_client", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue().strip()


def _scores_status(token: str) -> int:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client.get("/api/v1/scores/").status_code


def test_printed_token_authenticates_a_service_client_that_cannot_log_in() -> None:
    token = _run("crm-sync")
    user = get_user_model().objects.get(username="crm-sync")
    assert list(user.groups.values_list("name", flat=True)) == [SERVICE_CLIENTS_GROUP]
    assert not user.is_staff and not user.has_usable_password()
    assert _scores_status(token) == 200
    assert _run("crm-sync") == token, "running it again prints the same token"


def test_rotate_replaces_the_token_and_revoke_locks_the_client_out() -> None:
    old = _run("crm-sync")
    new = _run("crm-sync", "--rotate")
    assert new != old and (_scores_status(old), _scores_status(new)) == (401, 200)
    _run("crm-sync", "--revoke")
    assert _scores_status(new) == 401
    again = _run("crm-sync")
    assert again != new and _scores_status(again) == 200, "a revoked client can be given a new token"


def test_a_staff_user_is_never_turned_into_a_service_client() -> None:
    get_user_model().objects.create_user("ops", password="pw-ops-x", is_staff=True)
    with pytest.raises(CommandError, match="not a service client"):
        _run("ops")
    with pytest.raises(CommandError, match="not a valid user name"):
        _run("bad name!")


def test_a_name_too_long_for_a_user_name_is_refused_in_plain_words() -> None:
    with pytest.raises(CommandError, match="151 characters long; at most 150"):
        _run("c" * 151)
    assert not get_user_model().objects.filter(username__startswith="ccc").exists()
    assert _run("c" * 150)


def test_the_demo_user_command_never_takes_over_a_real_account(settings, tmp_path) -> None:  # noqa: ANN001
    settings.DEBUG, settings.VAR_DIR = True, tmp_path
    real = get_user_model().objects.create_user("ann", "ann@shop.example", "her-own-password", is_staff=False)

    for username, message in (("ann", "exists and is not a demo user"), ("", "not a valid user name")):
        with pytest.raises(CommandError, match=message):
            call_command("churn_demo_user", f"--username={username}", stdout=io.StringIO())
    real.refresh_from_db()
    assert real.check_password("her-own-password") and not real.is_superuser

    for _ in range(2):  # the demo user itself is created, then reset
        call_command("churn_demo_user", stdout=io.StringIO())
    password = (tmp_path / "demo-credentials.txt").read_text().split("password: ")[1].strip()
    assert get_user_model().objects.get(username="demo").check_password(password)
