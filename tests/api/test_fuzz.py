"""Property-based fuzzing of the whole API with schemathesis, against the live schema on loopback.

A real server thread (pytest-django's ``live_server``) answers over HTTP; schemathesis reads the schema it
serves and sends generated requests as a staff client (token header). Every response must be free of
undocumented server errors and conform to the schema. Kept small: a few examples per operation.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance

from churnsite.services import api_client_create
from tests.api.conftest import api_data

pytestmark = pytest.mark.django_db(transaction=True)


@schemathesis.check
def no_undocumented_server_error(ctx, response, case) -> None:  # noqa: ANN001 - schemathesis check signature
    """5xx only where the operation documents it (the real-time score answers 503 without a champion)."""
    documented = case.operation.definition.raw.get("responses", {})
    if response.status_code >= 500 and str(response.status_code) not in documented:
        raise AssertionError(f"{case.operation.label} answered {response.status_code}: {response.text[:500]}")


@pytest.fixture
def staff_token(django_user_model) -> str:  # noqa: ANN001
    # A staff member who calls the API from a script uses a token too: give the staff user one.
    from rest_framework.authtoken.models import Token

    from tests.staff import grant_app_permissions

    user = grant_app_permissions(django_user_model.objects.create_user("fuzzer", password="pw-fuzzer-x", is_staff=True))
    return Token.objects.create(user=user).key


# Requesting a training run trains a model in-process (Celery is eager in tests): minutes per example.
# It is exercised by tests/predictions; here it would only make the fuzzing slow.
NOT_FUZZED = {"POST /api/v1/training-runs/"}
EXAMPLES_PER_OPERATION = 10


def _strategies(operation, known_ids: dict[str, int]):  # noqa: ANN001, ANN202 - schemathesis objects
    """Valid requests (with random ids and with the id of a real row) and invalid ones."""
    positive = [operation.as_strategy()]
    resource = operation.path.removeprefix("/api/v1/").split("/")[0]
    if "{id}" in operation.path and resource in known_ids:
        positive.append(operation.as_strategy(path_parameters={"id": known_ids[resource]}))
    return st.one_of(*positive), operation.as_strategy(GenerationMode.NEGATIVE)


def test_api_fuzzing_finds_no_server_error_and_every_response_matches_the_schema(
    live_server,
    staff_token: str,
    settings,
    tmp_path,  # noqa: ANN001
) -> None:
    settings.CHURN_ARTIFACT_DIR = tmp_path / "models"
    data = api_data()
    api_client_create(name="fuzz-client")
    known_ids = {
        "customers": data["customers"][0].pk,
        "alerts": data["alert"].pk,
        "alert-rules": data["rule"].pk,
        "model-versions": data["run"].model_version_id,
    }
    headers = {"Authorization": f"Token {staff_token}"}
    # The schema the live server serves, read over HTTP like any client would.
    schema = schemathesis.openapi.from_url(f"{live_server.url}/api/v1/schema/?format=json", headers=headers)
    operations = [result.ok() for result in schema.get_all_operations()]
    fuzzed = [operation for operation in operations if operation.label not in NOT_FUZZED]
    assert len(fuzzed) >= 20, f"the schema lists only {[operation.label for operation in operations]}"
    calls: dict[str, int] = {}
    invalid_calls: dict[str, int] = {}
    examples = hypothesis_settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )

    for operation in fuzzed:
        valid, invalid = _strategies(operation, known_ids)

        @given(case=valid)
        @examples
        def conforms(case) -> None:  # noqa: ANN001
            calls[case.operation.label] = calls.get(case.operation.label, 0) + 1
            case.call_and_validate(
                base_url=live_server.url,
                headers=headers,
                checks=[no_undocumented_server_error, response_schema_conformance],
                timeout=30,
            )

        @given(case=invalid)
        @examples
        def survives(case) -> None:  # noqa: ANN001
            invalid_calls[case.operation.label] = invalid_calls.get(case.operation.label, 0) + 1
            case.call_and_validate(
                base_url=live_server.url, headers=headers, checks=[no_undocumented_server_error], timeout=30
            )

        conforms()
        try:
            survives()
        except Unsatisfiable:
            pass  # nothing in this operation's request can be invalid (no parameters, no body)
    assert set(calls) == {operation.label for operation in fuzzed}, "an operation was never called"
    assert len(invalid_calls) >= 15, f"invalid requests reached only {sorted(invalid_calls)}"
    print(  # noqa: T201
        f"{sum(calls.values())} valid requests over {len(calls)} operations, "
        f"{sum(invalid_calls.values())} invalid ones over {len(invalid_calls)}"
    )
