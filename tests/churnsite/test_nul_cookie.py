"""PostgreSQL cannot compare a text value holding a NUL character, and a session cookie may carry one: a quoted cookie value is unquoted with its octal escapes,
so ``sessionid="\\000..."`` (plain ASCII on the wire, which every proxy and gunicorn pass) becomes a session key
with a NUL that the session lookup sends to PostgreSQL."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.services, pytest.mark.django_db]

NUL_SESSION_COOKIE = 'sessionid="\\000abcdefghijklmnop"'


@pytest.mark.parametrize("path", ["/api/v1/customers/", "/admin/"])
def test_a_nul_in_the_session_cookie_is_a_client_error_not_a_server_error(client, path: str) -> None:  # noqa: ANN001
    client.raise_request_exception = False
    response = client.get(path, HTTP_COOKIE=NUL_SESSION_COOKIE)
    assert response.status_code < 500, (response.status_code, response.content[:200])
    # The cookie is dropped: the caller is anonymous, asked to log in (admin) or refused (API).
    assert response.status_code in (302, 401, 403)
