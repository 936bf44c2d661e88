"""REST API (staff only, Idempotency-Key on POST), the unsubscribe page and the admin alert queue."""

from __future__ import annotations

import hashlib
import json

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from rest_framework.test import APIClient

from alerts.models import (
    ALERT_NOTES_MAX_LENGTH,
    ActionKind,
    Alert,
    AlertRule,
    AlertStatus,
    AuditEntry,
    IdempotencyRecord,
    Intervention,
    TriggerKind,
)
from alerts.services import MANUAL_RULE_NAME, alert_rule_apply, alert_rule_ensure_manual, unsubscribe_token
from customers.models import Customer, Message
from predictions.models import ChurnScore
from tests.alerts.helpers import as_of, customer_make, model_version_make, score_make, scoring_run_make, sent_emails

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff():  # noqa: ANN201
    return get_user_model().objects.create_user("ann", password="pw-for-tests", is_staff=True, is_superuser=True)


@pytest.fixture
def api(staff) -> APIClient:  # noqa: ANN001
    client = APIClient()
    client.force_authenticate(staff)
    return client


@pytest.fixture
def alert() -> Alert:
    run = scoring_run_make(model_version_make(), at=as_of())
    customer = customer_make(1, name="Ann <script>x</script>")
    Message.objects.create(
        external_id="m1", customer=customer, conversation_id="c1", sent_at=as_of(-2), text="Where is my <b>refund</b>?"
    )
    score_make(customer, run, 0.9)
    rule = AlertRule.objects.create(
        name="alert only", trigger=TriggerKind.PROBABILITY, threshold=0.5, action=ActionKind.NONE, holdout_fraction=0
    )
    alert_rule_apply(rule=rule, scores=ChurnScore.objects.all(), actor="test")
    return Alert.objects.get()


RULE = {"name": "vip at risk", "trigger": "probability", "threshold": 0.7, "action": "coupon_email"}


def test_rules_are_staff_only(alert) -> None:  # noqa: ANN001
    assert APIClient().get("/api/v1/alert-rules/").status_code in (401, 403)
    user = get_user_model().objects.create_user("bob", password="pw-for-tests")
    client = APIClient()
    client.force_authenticate(user)
    assert client.get("/api/v1/alert-rules/").status_code == 403
    assert client.post("/api/v1/alert-rules/", RULE, format="json").status_code == 403


def test_replayed_rule_post_with_the_same_key_creates_one_rule(api) -> None:  # noqa: ANN001
    first = api.post("/api/v1/alert-rules/", RULE, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    replay = api.post("/api/v1/alert-rules/", RULE, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    other_body = api.post("/api/v1/alert-rules/", {**RULE, "name": "other"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")

    assert first.status_code == replay.status_code == 201
    assert replay.json() == first.json() and replay["Idempotent-Replayed"] == "true"
    assert other_body.status_code == 422
    assert AlertRule.objects.filter(name="vip at risk").count() == 1
    assert AuditEntry.objects.filter(action="rule_created").count() == 1


def test_a_retry_that_serialises_the_same_json_differently_replays_and_other_content_is_still_refused(
    api,  # noqa: ANN001
) -> None:
    def post(raw: str):  # noqa: ANN202
        return api.post("/api/v1/alert-rules/", raw, content_type="application/json", HTTP_IDEMPOTENCY_KEY="k-3")

    first = post(json.dumps(RULE))
    # Another client library: keys in another order, other spacing, non-ASCII escaped.
    retry = post(json.dumps(dict(reversed(list(RULE.items()))), indent=2, ensure_ascii=True))
    other = post(json.dumps({**RULE, "threshold": 0.71}))

    assert first.status_code == retry.status_code == 201
    assert retry["Idempotent-Replayed"] == "true" and retry.json() == first.json()
    assert other.status_code == 422
    assert AlertRule.objects.filter(name="vip at risk").count() == 1


def test_a_key_stored_before_bodies_were_canonical_still_replays_the_same_raw_body(api, staff) -> None:  # noqa: ANN001
    raw = json.dumps(RULE, indent=1).encode()
    path = "/api/v1/alert-rules/"
    IdempotencyRecord.objects.create(
        user=staff,
        key="k-old",
        method="POST",
        path=path,
        request_sha256=hashlib.sha256(b"\0".join([b"POST", path.encode(), raw])).hexdigest(),
        response_status=201,
        response_body={"id": 99},
    )

    replay = api.post(path, raw, content_type="application/json", HTTP_IDEMPOTENCY_KEY="k-old")
    other = api.post(
        path, json.dumps({**RULE, "name": "x"}), content_type="application/json", HTTP_IDEMPOTENCY_KEY="k-old"
    )

    assert replay.status_code == 201 and replay.json() == {"id": 99}
    assert other.status_code == 422
    assert not AlertRule.objects.exists()


def test_a_rule_posted_with_a_value_attribute_keeps_it(api) -> None:  # noqa: ANN001
    created = api.post("/api/v1/alert-rules/", {**RULE, "value_attribute": "MonthlyCharges"}, format="json")

    assert created.status_code == 201 and created.json()["value_attribute"] == "MonthlyCharges"
    assert AlertRule.objects.get(name=RULE["name"]).value_attribute == "MonthlyCharges"


def test_a_rule_post_refused_as_invalid_leaves_its_key_free_for_the_corrected_request(api) -> None:  # noqa: ANN001
    refused = api.post("/api/v1/alert-rules/", {**RULE, "threshold": 1.5}, format="json", HTTP_IDEMPOTENCY_KEY="k-2")
    corrected = api.post("/api/v1/alert-rules/", RULE, format="json", HTTP_IDEMPOTENCY_KEY="k-2")
    replay = api.post("/api/v1/alert-rules/", RULE, format="json", HTTP_IDEMPOTENCY_KEY="k-2")

    assert refused.status_code == 400, refused.json()
    assert corrected.status_code == 201, corrected.json()
    assert replay.status_code == 201 and replay["Idempotent-Replayed"] == "true"
    assert AlertRule.objects.filter(name="vip at risk").count() == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"threshold": 1.5}, "threshold"),
        # Those that break a check constraint name their field too, not only the constraint.
        ({"trigger": "top_n"}, "top_n"),
        ({"trigger": "top_n", "top_n": 0}, "top_n"),
        ({"trigger": "top_percent"}, "top_percent"),
        ({"action": "webhook", "webhook_secret": "s3cret"}, "webhook_url"),
    ],
)
def test_invalid_rule_is_refused_with_the_field_named(api, change: dict, field: str) -> None:  # noqa: ANN001
    created = api.post("/api/v1/alert-rules/", {**RULE, **change}, format="json")
    rule = AlertRule.objects.create(name="valid", trigger=TriggerKind.PROBABILITY, threshold=0.7)
    changed = api.patch(f"/api/v1/alert-rules/{rule.pk}/", change, format="json")

    for response in (created, changed):
        assert response.status_code == 400 and field in response.json()["error"]["fields"], response.json()
    assert list(AlertRule.objects.values_list("name", flat=True)) == ["valid"]


@pytest.mark.parametrize(
    ("webhook", "field"),
    [
        # An empty HMAC key is a key everybody knows: anyone could forge the signature of a "signed" webhook.
        ({"webhook_url": "https://crm.example.com/hook"}, "webhook_secret"),
        ({"webhook_url": "https://crm.example.com/hook", "webhook_secret": ""}, "webhook_secret"),
        # URLField takes ftp://, which a webhook can never be delivered to.
        ({"webhook_url": "ftp://crm.example.com/hook", "webhook_secret": "s3cret"}, "webhook_url"),
    ],
)
def test_a_webhook_rule_needs_a_secret_and_an_http_url(api, webhook: dict, field: str) -> None:  # noqa: ANN001
    created = api.post("/api/v1/alert-rules/", {**RULE, "action": "webhook", **webhook}, format="json")
    rule = AlertRule.objects.create(name="coupons", trigger=TriggerKind.PROBABILITY, threshold=0.7)
    changed = api.patch(f"/api/v1/alert-rules/{rule.pk}/", {"action": "webhook", **webhook}, format="json")

    for response in (created, changed):
        assert response.status_code == 400 and field in response.json()["error"]["fields"], response.json()
    assert not AlertRule.objects.filter(action=ActionKind.WEBHOOK).exists()


def test_replayed_send_coupon_post_gives_one_coupon_and_one_email(
    api,
    alert,
    django_capture_on_commit_callbacks,  # noqa: ANN001
) -> None:
    url = f"/api/v1/alerts/{alert.pk}/send-coupon/"
    with django_capture_on_commit_callbacks(execute=True):
        first = api.post(url, {}, format="json", HTTP_IDEMPOTENCY_KEY="coupon-1")
    with django_capture_on_commit_callbacks(execute=True):
        replay = api.post(url, {}, format="json", HTTP_IDEMPOTENCY_KEY="coupon-1")
    with django_capture_on_commit_callbacks(execute=True):
        without_key = api.post(url, {}, format="json")

    assert first.status_code == replay.status_code == 201
    assert replay.json() == first.json() and first.json()["coupon_code"]
    assert without_key.json()["id"] == first.json()["id"], "one coupon intervention per alert, key or not"
    assert Intervention.objects.count() == 1
    assert len(sent_emails(django_settings.EMAIL_FILE_PATH)) == 1


def test_a_201_says_where_the_created_rule_or_coupon_is_also_when_replayed(
    api,
    alert,
    django_capture_on_commit_callbacks,  # noqa: ANN001
) -> None:
    # A 201 without a Location header left the client to build the URL of what it created.
    for key in ("k-loc", "k-loc"):
        created = api.post("/api/v1/alert-rules/", RULE, format="json", HTTP_IDEMPOTENCY_KEY=key)
        assert created.status_code == 201
        assert created["Location"] == f"http://testserver/api/v1/alert-rules/{created.json()['id']}/"
        assert api.get(created["Location"]).json()["id"] == created.json()["id"]
    for key in ("coupon-loc", "coupon-loc", ""):
        with django_capture_on_commit_callbacks(execute=True):
            coupon = api.post(f"/api/v1/alerts/{alert.pk}/send-coupon/", {}, format="json", HTTP_IDEMPOTENCY_KEY=key)
        assert coupon.status_code == 201
        assert coupon["Location"] == f"http://testserver/api/v1/interventions/{coupon.json()['id']}/"
        assert api.get(coupon["Location"]).json()["id"] == coupon.json()["id"]


def test_alert_transition_and_filters(api, alert) -> None:  # noqa: ANN001
    response = api.post(f"/api/v1/alerts/{alert.pk}/transition/", {"status": "acknowledged"}, format="json")
    assert response.status_code == 200 and response.json()["status"] == "acknowledged"
    refused = api.post(f"/api/v1/alerts/{alert.pk}/transition/", {"status": "bogus"}, format="json")
    assert refused.status_code == 400 and "status" in refused.json()["error"]["fields"]

    assert api.get("/api/v1/alerts/?status=acknowledged&risk_tier=high").json()["count"] == 1
    assert api.get("/api/v1/alerts/?status=open").json()["count"] == 0
    assert api.get("/api/v1/interventions/").json()["count"] == 0
    assert api.get(f"/api/v1/alert-rules/{alert.rule_id}/uplift/").json()["difference"] is None


def test_unsubscribe_get_only_shows_the_page_and_post_opts_out(client, alert) -> None:  # noqa: ANN001
    url = f"/unsubscribe/{unsubscribe_token(customer_id=alert.customer_id)}/"

    page = client.get(url)
    assert page.status_code == 200 and b'<form method="post"' in page.content
    assert Customer.objects.get(pk=alert.customer_id).opted_out_at is None

    done = client.post(url)
    assert done.status_code == 200 and b"unsubscribed" in done.content
    assert Customer.objects.get(pk=alert.customer_id).opted_out_at is not None
    assert client.post(url).status_code == 200, "a second click changes nothing and still succeeds"
    assert AuditEntry.objects.filter(action="customer_opted_out").count() == 1


def test_the_unsubscribe_page_of_a_customer_who_is_gone_says_the_link_is_not_valid(client) -> None:  # noqa: ANN001
    url = f"/unsubscribe/{unsubscribe_token(customer_id=987654)}/"
    assert client.post(url).status_code == 404
    page = client.get(url)
    assert page.status_code == 404 and b"<form" not in page.content and b"not valid" in page.content


def test_unsubscribe_refuses_a_tampered_token(client, alert) -> None:  # noqa: ANN001
    token = unsubscribe_token(customer_id=alert.customer_id)
    forged = token.replace(token[-1], "A" if token[-1] != "A" else "B")
    response = client.post(f"/unsubscribe/{forged}/")
    assert response.status_code == 400
    assert Customer.objects.get(pk=alert.customer_id).opted_out_at is None


def test_admin_queue_shows_escaped_factors_and_messages_and_bulk_acknowledges(client, staff, alert) -> None:  # noqa: ANN001
    client.force_login(staff)
    listing = client.get("/admin/alerts/alert/?status__exact=open&risk_tier=high")
    assert listing.status_code == 200 and b"Ann &lt;script&gt;" in listing.content

    detail = client.get(f"/admin/alerts/alert/{alert.pk}/change/")
    assert b"days since last order" in detail.content
    assert b"Where is my &lt;b&gt;refund&lt;/b&gt;?" in detail.content

    response = client.post(
        "/admin/alerts/alert/", {"action": "acknowledge", "_selected_action": [alert.pk]}, follow=True
    )
    assert response.status_code == 200
    assert Alert.objects.get(pk=alert.pk).status == AlertStatus.ACKNOWLEDGED
    assert AuditEntry.objects.filter(action="alert_status", actor="user:ann").count() == 1
    assert client.get(f"/admin/alerts/auditentry/{AuditEntry.objects.first().pk}/delete/").status_code == 403


@pytest.mark.django_db(transaction=True)
def test_churn_alerts_command_sends_before_returning(capsys) -> None:  # noqa: ANN001
    run = scoring_run_make(model_version_make(), at=as_of())
    for i in range(3):
        score_make(customer_make(i), run, 0.9)
    AlertRule.objects.create(
        name="all", trigger=TriggerKind.PROBABILITY, threshold=0.5, action=ActionKind.COUPON_EMAIL, holdout_fraction=0
    )

    call_command("churn_alerts")
    call_command("churn_alerts", "--rule", "all")

    out = capsys.readouterr().out
    assert "all: 3 eligible, 3 new alerts, actions: 3 sent" in out
    assert "all: 3 eligible, 0 new alerts" in out
    assert len(sent_emails(django_settings.EMAIL_FILE_PATH)) == 3
    assert set(Intervention.objects.values_list("status", flat=True)) == {"sent"}


ADMIN_RULE_FORM = {
    "name": "admin rule", "description": "", "active": "on", "segments": "[]", "attribute_filters": "{}",
    "value_window_days": "365", "trigger": "top_n", "threshold": "0.6", "segment_thresholds": "{}", "top_n": "10",
    "cooldown_days": "30", "action": "coupon_email", "coupon_discount_percent": "15", "coupon_valid_days": "14",
    "coupon_cost": "10", "webhook_url": "", "new_webhook_secret": "", "holdout_fraction": "0.1", "horizon_days": "60",
}  # fmt: skip


def test_rules_created_and_changed_in_the_admin_are_audited(client, staff) -> None:  # noqa: ANN001
    client.force_login(staff)
    form = ADMIN_RULE_FORM
    created = client.post("/admin/alerts/alertrule/add/", form)
    assert created.status_code == 302, created.content.decode()[:2000]
    rule = AlertRule.objects.get(name="admin rule")
    changed = client.post(f"/admin/alerts/alertrule/{rule.pk}/change/", {**form, "top_n": "20"})
    assert changed.status_code == 302

    assert AlertRule.objects.get(pk=rule.pk).top_n == 20
    assert list(AuditEntry.objects.filter(rule=rule).order_by("id").values_list("action", "actor")) == [
        ("rule_created", "user:ann"),
        ("rule_updated", "user:ann"),
    ]


def test_the_manual_coupon_rules_name_is_refused_for_other_rules_and_the_manual_rule_stays_editable(
    api, client, staff
) -> None:  # noqa: ANN001
    # A rule given the name before the first manual coupon (or renamed to it) was taken for the manual rule: the
    # coupons staff send by hand were filed under an active rule with a holdout and counted in its uplift.
    taken = api.post("/api/v1/alert-rules/", {**RULE, "name": MANUAL_RULE_NAME}, format="json")
    rule = AlertRule.objects.create(name="renamed", trigger=TriggerKind.PROBABILITY, threshold=0.5)
    renamed = api.patch(f"/api/v1/alert-rules/{rule.pk}/", {"name": MANUAL_RULE_NAME}, format="json")
    client.force_login(staff)
    in_admin = client.post("/admin/alerts/alertrule/add/", {**ADMIN_RULE_FORM, "name": MANUAL_RULE_NAME})

    manual = alert_rule_ensure_manual()
    discount = api.patch(f"/api/v1/alert-rules/{manual.pk}/", {"coupon_discount_percent": 20}, format="json")

    assert (taken.status_code, list(taken.json()["error"]["fields"])) == (400, ["name"]), taken.json()
    assert (renamed.status_code, list(renamed.json()["error"]["fields"])) == (400, ["name"]), renamed.json()
    assert in_admin.status_code == 200 and "name" in in_admin.context["adminform"].form.errors
    assert (manual.active, manual.holdout_fraction, discount.status_code) == (False, 0, 200), discount.json()
    assert list(AlertRule.objects.order_by("pk").values_list("name", flat=True)) == ["renamed", MANUAL_RULE_NAME]


def test_the_manual_coupon_rule_stays_inactive_and_without_a_control_group(api) -> None:  # noqa: ANN001
    # Active, it alerted on scores (with a threshold lowered) and mixed those alerts with the coupons staff chose; a
    # holdout did nothing. A rule of someone's own that had the name before it was reserved is told to rename.
    manual = alert_rule_ensure_manual()
    activated = api.patch(f"/api/v1/alert-rules/{manual.pk}/", {"active": True}, format="json")
    held_out = api.patch(f"/api/v1/alert-rules/{manual.pk}/", {"holdout_fraction": 0.1}, format="json")

    assert (activated.status_code, list(activated.json()["error"]["fields"])) == (400, ["active"]), activated.json()
    assert (held_out.status_code, list(held_out.json()["error"]["fields"])) == (400, ["holdout_fraction"])
    manual.refresh_from_db()
    assert (manual.active, manual.holdout_fraction) == (False, 0)


def test_the_admin_refuses_a_webhook_rule_without_a_secret_or_an_http_url(client, staff) -> None:  # noqa: ANN001
    client.force_login(staff)
    webhook = {**ADMIN_RULE_FORM, "action": "webhook", "webhook_url": "https://crm.example.com/hook"}

    no_secret = client.post("/admin/alerts/alertrule/add/", webhook)
    ftp = client.post(
        "/admin/alerts/alertrule/add/",
        {**webhook, "webhook_url": "ftp://crm.example.com/hook", "new_webhook_secret": "k"},
    )
    assert no_secret.status_code == 200 and "new_webhook_secret" in no_secret.context["adminform"].form.errors
    assert ftp.status_code == 200 and "webhook_url" in ftp.context["adminform"].form.errors
    assert not AlertRule.objects.exists()

    coupons = client.post("/admin/alerts/alertrule/add/", ADMIN_RULE_FORM)
    assert coupons.status_code == 302
    url = f"/admin/alerts/alertrule/{AlertRule.objects.get().pk}/change/"
    assert "new_webhook_secret" in client.post(url, webhook).context["adminform"].form.errors
    assert client.post(url, {**webhook, "new_webhook_secret": "s3cret"}).status_code == 302
    assert client.post(url, {**webhook, "description": "a blank secret keeps the one set"}).status_code == 302
    rule = AlertRule.objects.get()
    assert (rule.action, rule.webhook_secret, rule.description) == (
        "webhook",
        "s3cret",
        "a blank secret keeps the one set",
    )


def test_alerts_are_assigned_and_annotated_through_the_api(api, staff, alert) -> None:  # noqa: ANN001
    response = api.patch(f"/api/v1/alerts/{alert.pk}/", {"assignee": "ann", "notes": "call on Monday"}, format="json")
    assert response.status_code == 200, response.json()
    assert (response.json()["assignee"], response.json()["notes"]) == ("ann", "call on Monday")
    assert api.patch(f"/api/v1/alerts/{alert.pk}/", {"assignee": "nobody"}, format="json").status_code == 400
    assert AuditEntry.objects.filter(action="alert_updated", actor="user:ann").count() == 1


def test_alerts_are_assigned_to_active_staff_only(api, alert) -> None:  # noqa: ANN001
    get_user_model().objects.create_user("left-the-company", is_staff=True, is_active=False)
    response = api.patch(f"/api/v1/alerts/{alert.pk}/", {"assignee": "left-the-company"}, format="json")
    assert response.status_code == 400 and "assignee" in response.json()["error"]["fields"], response.json()
    assert Alert.objects.get(pk=alert.pk).assignee is None


def test_alerts_are_assigned_only_to_staff_who_may_work_them(api, client, staff, alert) -> None:  # noqa: ANN001
    from django.contrib.auth.models import Group, Permission

    viewer = get_user_model().objects.create_user("viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(content_type__app_label="alerts", codename="view_alert"))
    agent = get_user_model().objects.create_user("agent", is_staff=True)
    agents = Group.objects.create(name="retention agents")
    agents.permissions.add(Permission.objects.get(content_type__app_label="alerts", codename="change_alert"))
    agent.groups.add(agents)

    refused = api.patch(f"/api/v1/alerts/{alert.pk}/", {"assignee": "viewer"}, format="json")
    assigned = api.patch(f"/api/v1/alerts/{alert.pk}/", {"assignee": "agent"}, format="json")
    client.force_login(staff)
    page = client.get(f"/admin/alerts/alert/{alert.pk}/change/")
    offered = {str(user) for user in page.context["adminform"].form.fields["assignee"].queryset}

    assert refused.status_code == 400 and "assignee" in refused.json()["error"]["fields"], refused.json()
    assert assigned.status_code == 200 and assigned.json()["assignee"] == "agent"
    assert offered == {"ann", "agent"}, "a view-only member of staff cannot act on an alert"


def test_a_transition_whose_note_would_take_the_notes_past_their_limit_is_refused(api, alert) -> None:  # noqa: ANN001
    """Each transition appends its note (up to 2,000 characters): the notes would grow past ALERT_NOTES_MAX_LENGTH,
    and then be refused when saved again through the API and the admin."""
    url = f"/api/v1/alerts/{alert.pk}/transition/"
    for status in ["acknowledged", "open"] * 2:
        assert api.post(url, {"status": status, "note": "x" * 2000}, format="json").status_code == 200
    notes = Alert.objects.get(pk=alert.pk).notes

    refused = api.post(url, {"status": "acknowledged", "note": "y" * 2000}, format="json")
    assert refused.status_code == 400 and "note" in refused.json()["error"]["fields"], refused.json()
    alert.refresh_from_db()
    assert (alert.status, alert.notes) == ("open", notes), "the transition did not happen"
    room = ALERT_NOTES_MAX_LENGTH - len(notes) - 1  # the note goes on a line of its own
    assert api.post(url, {"status": "acknowledged", "note": "y" * room}, format="json").status_code == 200
    notes = Alert.objects.get(pk=alert.pk).notes
    assert len(notes) == ALERT_NOTES_MAX_LENGTH
    assert api.patch(f"/api/v1/alerts/{alert.pk}/", {"notes": notes}, format="json").status_code == 200


def test_churn_alerts_rule_option_on_an_invalid_rule_is_a_command_error_naming_rule_and_field() -> None:
    from django.core.management.base import CommandError

    AlertRule.objects.create(name="old", trigger=TriggerKind.PROBABILITY, threshold=0.5, action=ActionKind.NONE)
    # Saved before validation existed: applying all rules skips it (with an audit entry); asked for, it is refused.
    AlertRule.objects.filter(name="old").update(attribute_filters=["plan"])

    with pytest.raises(CommandError, match=r"--rule 'old': the rule's settings are not valid \(attribute_filters: "):
        call_command("churn_alerts", "--rule", "old")


@pytest.mark.django_db(transaction=True)
def test_churn_alerts_records_outcomes_and_prints_the_uplift_report(capsys) -> None:  # noqa: ANN001
    from tests.alerts.helpers import order_make

    run = scoring_run_make(model_version_make(), at=as_of(-400))
    for i in range(30):
        customer = customer_make(i)
        score_make(customer, run, 0.9)
        order_make(customer, amount="20", placed_at=as_of(-420))  # customers with orders: judged by them
        if i % 2 == 0:
            order_make(customer, amount="20", placed_at=as_of(-390))
    AlertRule.objects.create(
        name="half held out", trigger=TriggerKind.PROBABILITY, threshold=0.5, holdout_fraction=0.5, horizon_days=30
    )

    call_command("churn_alerts")
    Intervention.objects.update(created_at=as_of(-400))  # dispatched when that score came in, 400 days ago
    call_command("churn_alerts", "--outcomes", "--report")

    out = capsys.readouterr().out
    assert "outcomes: 15 retained, 15 churned" in out
    assert "half held out: retained" in out and "95% CI" in out
