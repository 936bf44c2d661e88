"""The webhook action: a JSON POST signed with HMAC-SHA256, retried with backoff, its response recorded.
Served by a tiny HTTP server on 127.0.0.1 started by the test."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from alerts.models import ActionKind, Alert, AlertRule, AlertStatus, AuditEntry, Intervention, TriggerKind
from alerts.services import alert_rule_apply, alert_transition
from alerts.tasks import deliver_webhook_task
from predictions.models import ChurnScore
from tests.alerts.helpers import as_of, customer_make, model_version_make, score_make, scoring_run_make

pytestmark = pytest.mark.django_db
SECRET = "s3cret-for-tests"
BROKEN = -1  # a reply that is not HTTP (http.client.BadStatusLine)


class Receiver:
    def __init__(self) -> None:
        self.replies: list[int] = []
        self.requests: list[tuple[dict[str, str], bytes]] = []


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server API
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
            code = state.replies.pop(0) if state.replies else 200
            if code == BROKEN:
                self.wfile.write(b"not an HTTP reply\r\n\r\n")
                self.close_connection = True
                return
            reply = json.dumps({"received": True, "code": code}).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_port}/hooks/churn"
    finally:
        server.shutdown()
        server.server_close()


def apply_webhook_rule(
    url: str, django_capture_on_commit_callbacks, *, secret: str = SECRET, send: bool = True
) -> Intervention:  # noqa: ANN001
    run = scoring_run_make(model_version_make(), at=as_of())
    score_make(customer_make(1), run, 0.9)
    rule = AlertRule.objects.create(
        name="hook", trigger=TriggerKind.PROBABILITY, threshold=0.5, action=ActionKind.WEBHOOK, webhook_url=url,
        webhook_secret=secret, holdout_fraction=0,
    )  # fmt: skip
    with django_capture_on_commit_callbacks(execute=send):
        alert_rule_apply(rule=rule, scores=ChurnScore.objects.all(), actor="test")
    return Intervention.objects.get()


def test_webhook_posts_signed_json_and_records_the_response(receiver, django_capture_on_commit_callbacks) -> None:  # noqa: ANN001
    state, url = receiver

    intervention = apply_webhook_rule(url, django_capture_on_commit_callbacks)

    ((headers, body),) = state.requests
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["x-churnsite-signature"], expected)
    assert headers["content-type"] == "application/json"
    payload = json.loads(body)
    assert payload["event"] == "churn.alert" and payload["probability"] == 0.9
    assert headers["x-churnsite-idempotency-key"] == payload["idempotency_key"] == intervention.idempotency_key
    assert (intervention.status, intervention.response_status) == ("sent", 200)
    assert json.loads(intervention.response_body) == {"received": True, "code": 200}


def test_webhook_retries_server_errors_with_backoff_then_succeeds(
    receiver,
    settings,
    django_capture_on_commit_callbacks,  # noqa: ANN001
) -> None:
    settings.ALERTS_RETRY_BACKOFF_SECONDS = 0
    state, url = receiver
    state.replies = [503, 500]

    intervention = apply_webhook_rule(url, django_capture_on_commit_callbacks)

    assert len(state.requests) == 3
    assert (intervention.status, intervention.attempts, intervention.response_status) == ("sent", 3, 200)


def test_webhook_client_error_fails_without_retry(receiver, django_capture_on_commit_callbacks) -> None:  # noqa: ANN001
    state, url = receiver
    state.replies = [400]

    intervention = apply_webhook_rule(url, django_capture_on_commit_callbacks)

    assert len(state.requests) == 1
    assert (intervention.status, intervention.reason, intervention.response_status) == ("failed", "HTTP 400", 400)


def test_webhook_broken_reply_is_retried_and_every_attempt_recorded(
    receiver,
    settings,
    django_capture_on_commit_callbacks,  # noqa: ANN001
) -> None:
    settings.ALERTS_RETRY_BACKOFF_SECONDS = 0
    state, url = receiver
    state.replies = [BROKEN]

    intervention = apply_webhook_rule(url, django_capture_on_commit_callbacks)

    assert len(state.requests) == 2
    assert (intervention.status, intervention.attempts, intervention.response_status) == ("sent", 2, 200)
    failed = AuditEntry.objects.get(intervention=intervention, action="intervention_attempt_failed")
    assert failed.details == {"response_status": None, "attempt": 1}


@pytest.mark.parametrize(
    ("url", "error"), [("http://example.com:port/hook", "InvalidURL"), ("http://[::1/hook", "ValueError")]
)
def test_webhook_url_that_cannot_be_requested_fails_without_retry(
    url, error, django_capture_on_commit_callbacks
) -> None:  # noqa: ANN001
    intervention = apply_webhook_rule(url, django_capture_on_commit_callbacks)

    assert (intervention.status, intervention.attempts) == ("failed", 1)
    assert intervention.reason.startswith(error), intervention.reason


def test_a_rule_saved_without_a_secret_sends_no_forgeable_webhook(receiver, django_capture_on_commit_callbacks) -> None:  # noqa: ANN001
    """Rules are refused without a secret now; one saved before (or written to the database directly) must not sign
    with an empty HMAC key, which anybody can."""
    state, url = receiver

    intervention = apply_webhook_rule(url, django_capture_on_commit_callbacks, secret="")

    assert state.requests == []
    assert (intervention.status, intervention.attempts) == ("failed", 0)
    assert "no webhook secret" in intervention.reason, intervention.reason


@pytest.mark.parametrize("closed", [AlertStatus.DISMISSED, AlertStatus.RESOLVED])
def test_a_webhook_waiting_for_its_send_when_staff_close_the_alert_is_not_sent(
    receiver, closed: str, django_capture_on_commit_callbacks
) -> None:  # noqa: ANN001
    state, url = receiver
    pending = apply_webhook_rule(url, django_capture_on_commit_callbacks, send=False)
    alert_transition(alert=pending.alert, status=closed, actor="user:ann")
    deliver_webhook_task.apply(args=[pending.pk])  # the queued send runs after staff closed the alert
    deliver_webhook_task.apply(args=[pending.pk])  # redelivered: nothing more happens

    intervention = Intervention.objects.get()
    assert state.requests == []
    assert (intervention.status, intervention.reason) == ("suppressed", f"at send time: alert {closed}")
    assert AuditEntry.objects.filter(intervention=intervention, action="intervention_suppressed").count() == 1
    assert Alert.objects.get().status == closed
