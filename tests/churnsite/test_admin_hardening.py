"""Admin findings of an audit, each pinned: the webhook secret is write-only, coupons only for open alerts and
only for staff who may act on alerts, a champion must be loadable, assignees are staff, emails are addresses,
one rescore per form, and the model version page costs the same queries for 1 or 50 audit entries."""

from __future__ import annotations

import uuid
from unittest import mock

import pytest
from django.contrib.auth.models import Permission
from django.core import mail
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from alerts.models import AlertRule, AlertStatus, Intervention
from customers.models import Customer
from predictions.models import ChurnScore, ModelAuditEntry, ModelVersion
from predictions.selectors import champion_model_version, customers_to_score, model_artifact_problem
from predictions.services import model_version_promote, model_version_register
from tests.customers.test_admin import T0, _alert, _model_version, _rule, _score
from tests.predictions.conftest import store, train  # noqa: F401 - the store fixture

pytestmark = pytest.mark.django_db


def _staff(django_user_model, name: str, *codenames: str):  # noqa: ANN001, ANN202
    user = django_user_model.objects.create_user(name, password="pw-for-tests-123", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return user


def test_a_rules_webhook_secret_is_never_shown_and_is_kept_unless_replaced(
    client, admin_client, django_user_model
) -> None:  # noqa: ANN001
    rule = _rule(webhook_url="https://crm.example.com/hook", webhook_secret="s3cr3t-hmac-key")
    url = reverse("admin:alerts_alertrule_change", args=[rule.pk])
    client.force_login(_staff(django_user_model, "viewer", "view_alertrule"))

    for page in (client.get(url), admin_client.get(url)):  # view-only staff, and staff who may change rules
        assert page.status_code == 200
        assert "s3cr3t-hmac-key" not in page.content.decode() and "set (not shown)" in page.content.decode()

    form = admin_client.get(url).context["adminform"].form
    data = {name: form[name].value() for name in form.fields if form[name].value() is not None}
    data.update({"description": "edited", "new_webhook_secret": "", "_save": "Save"})
    assert admin_client.post(url, data).status_code == 302
    rule.refresh_from_db()
    assert (rule.description, rule.webhook_secret) == ("edited", "s3cr3t-hmac-key"), "a blank field keeps it"
    assert admin_client.post(url, data | {"new_webhook_secret": "rotated-key"}).status_code == 302
    rule.refresh_from_db()
    assert rule.webhook_secret == "rotated-key"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("status", [AlertStatus.DISMISSED, AlertStatus.RESOLVED])
def test_the_send_coupon_action_refuses_alerts_that_are_no_longer_open(admin_client, status: str) -> None:  # noqa: ANN001
    customer = Customer.objects.create(external_id="c-1", name="Eve", email="eve@example.com", marketing_consent=True)
    closed = _alert(customer, _rule(), _score(customer, _model_version(), 0.8, T0), status=status)

    response = admin_client.post(
        reverse("admin:alerts_alert_changelist"),
        {"action": "send_coupon", "_selected_action": [closed.pk]},
        follow=True,
    )

    assert mail.outbox == [] and not Intervention.objects.exists()
    messages = [str(m) for m in response.context["messages"]]
    assert any(f"1 refused: alert {closed.pk} is {status}" in m for m in messages), messages


def test_the_api_answers_409_for_a_coupon_on_a_dismissed_alert(admin_client) -> None:  # noqa: ANN001
    customer = Customer.objects.create(external_id="c-1", name="Eve", email="eve@example.com", marketing_consent=True)
    closed = _alert(customer, _rule(), status=AlertStatus.DISMISSED)

    response = admin_client.post(f"/api/v1/alerts/{closed.pk}/send-coupon/")

    assert response.status_code == 409 and "only open or acknowledged alerts" in response.json()["error"]["message"]


def test_promotion_and_rollback_refuse_a_version_whose_artifact_is_missing(admin_client) -> None:  # noqa: ANN001
    working = _model_version("working", status="champion")
    broken = model_version_register(name="broken", model_type="lightgbm", metrics={}, holdout_key="h", actor="t")
    assert model_artifact_problem(broken) == "no artifact path recorded"

    response = admin_client.post(
        reverse("admin:predictions_modelversion_changelist"),
        {"action": "promote_selected", "_selected_action": [broken.pk]},
        follow=True,
    )

    assert champion_model_version() == working
    messages = [str(m) for m in response.context["messages"]]
    assert any("broken cannot become champion: no artifact path recorded" in m for m in messages), messages
    ModelAuditEntry.objects.create(model_version=broken, action="promoted", actor="earlier")  # once champion
    rollback = admin_client.post("/api/v1/model-versions/rollback")
    assert rollback.status_code == 409 and champion_model_version() == working


@pytest.mark.django_db(transaction=True)
def test_sending_a_coupon_from_the_customer_page_needs_the_alerts_permission(client, django_user_model) -> None:  # noqa: ANN001
    customer = Customer.objects.create(external_id="c-1", name="Eve", email="eve@example.com", marketing_consent=True)
    _score(customer, _model_version(), 0.8, T0)
    page = reverse("admin:customers_customer_change", args=[customer.pk])
    send = reverse("admin:customers_customer_send_coupon", args=[customer.pk])
    client.force_login(_staff(django_user_model, "clerk", "view_customer", "change_customer"))

    assert "action-send-coupon" not in client.get(page).content.decode()
    assert client.post(send, {"request_key": "c" * 32}).status_code == 403
    assert mail.outbox == [] and not Intervention.objects.exists()
    client.force_login(_staff(django_user_model, "crm", "view_customer", "change_customer", "change_alert"))
    assert "action-send-coupon" in client.get(page).content.decode()


def test_alerts_are_assigned_to_active_staff_only_with_notes_as_long_as_the_api_allows(
    admin_client, django_user_model
) -> None:  # noqa: ANN001
    shopper = django_user_model.objects.create_user("shopper", password="pw-shopper-1")
    customer = Customer.objects.create(external_id="c-1", name="Eve", email="e@example.com")
    alert = _alert(customer, _rule())
    url = reverse("admin:alerts_alert_change", args=[alert.pk])
    form = {"notes": "", "_save": "Save", "interventions-TOTAL_FORMS": "0", "interventions-INITIAL_FORMS": "0"}

    refused = admin_client.post(url, form | {"assignee": shopper.pk})
    too_long = admin_client.post(url, form | {"notes": "x" * 10_001})

    assert refused.status_code == too_long.status_code == 200  # the form again, with its errors
    assert "assignee" in refused.context["adminform"].form.errors
    assert "notes" in too_long.context["adminform"].form.errors
    alert.refresh_from_db()
    assert alert.assignee_id is None and alert.notes == ""


def test_the_customer_form_refuses_an_email_no_email_can_be_sent_to(admin_client) -> None:  # noqa: ANN001
    customer = Customer.objects.create(external_id="c-1", name="Eve", email="e@example.com")
    url = reverse("admin:customers_customer_change", args=[customer.pk])
    form = admin_client.get(url).context["adminform"].form
    data = {name: form[name].value() for name in form.fields if form[name].value() is not None}

    response = admin_client.post(url, data | {"email": "not an email", "_save": "Save"})

    assert response.status_code == 200 and "email" in response.context["adminform"].form.errors
    customer.refresh_from_db()
    assert customer.email == "e@example.com"


def test_the_model_version_page_costs_the_same_queries_for_1_or_50_audit_entries(admin_client) -> None:  # noqa: ANN001
    version = _model_version()
    url = reverse("admin:predictions_modelversion_change", args=[version.pk])

    def queries(entries: int) -> int:
        while ModelAuditEntry.objects.count() < entries:
            ModelAuditEntry.objects.create(model_version=version, action="promoted", actor="t")
        with CaptureQueriesContext(connection) as captured:
            assert admin_client.get(url).status_code == 200
        return len(captured)

    admin_client.get(url)  # warm the per-process caches (content types, the session) before counting
    assert queries(1) == queries(50)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("store")
def test_rescore_now_sent_twice_by_one_form_stores_one_score(admin_client) -> None:  # noqa: ANN001
    version = ModelVersion.objects.get(training_run=train())
    if champion_model_version() != version:
        model_version_promote(model_version=version, actor="t")
    customer = customers_to_score(as_of=timezone.now()).first()
    before = ChurnScore.objects.filter(customer=customer).count()
    url = reverse("admin:customers_customer_rescore", args=[customer.pk])
    key = uuid.uuid4().hex

    first = admin_client.post(url, {"request_key": key}, follow=True)
    second = admin_client.post(url, {"request_key": key}, follow=True)  # a double click, a browser resubmit

    assert ChurnScore.objects.filter(customer=customer).count() == before + 1
    assert any(str(m).startswith("Rescored with") for m in first.context["messages"])
    assert any(str(m).startswith("Already rescored with") for m in second.context["messages"])
    admin_client.post(url, {"request_key": uuid.uuid4().hex})  # a new click: a new score
    assert ChurnScore.objects.filter(customer=customer).count() == before + 2
    assert AlertRule.objects.count() == 0  # nothing else was set off


def test_saving_the_read_only_model_version_page_writes_nothing(admin_client) -> None:  # noqa: ANN001
    version = _model_version("v1", status="champion")
    url = reverse("admin:predictions_modelversion_change", args=[version.pk])
    (inline,) = admin_client.get(url).context["inline_admin_formsets"]
    prefix = inline.formset.prefix
    data = {"_save": "Save", f"{prefix}-TOTAL_FORMS": "0", f"{prefix}-INITIAL_FORMS": "0"}
    ModelVersion.objects.filter(pk=version.pk).update(status="retired")  # a rollback between reading and saving
    with mock.patch.object(ModelVersion, "save") as save:
        response = admin_client.post(url, data)
    assert response.status_code == 302 and not save.called
    version.refresh_from_db()
    assert version.status == "retired"


def test_the_rule_list_refuses_filters_on_the_webhook_secret(client, django_user_model) -> None:  # noqa: ANN001
    # ?webhook_secret__startswith=s, then s3, ... read the secret one character at a time from the result count.
    _rule(webhook_url="https://crm.example.com/hook", webhook_secret="s3cr3t-hmac-key")
    client.force_login(_staff(django_user_model, "viewer", "view_alertrule"))
    url = reverse("admin:alerts_alertrule_changelist")
    assert client.get(url).context["cl"].result_count == 1
    for lookup in ("webhook_secret__startswith", "webhook_secret", "webhook_secret__regex"):
        response = client.get(url, {lookup: "s3"})
        assert response.status_code != 200 or response.context["cl"].result_count != 1, lookup
        assert client.get(url, {lookup: "zz"}).status_code == response.status_code  # a guess tells nothing


def test_the_customer_page_shows_alerts_and_coupon_codes_only_to_staff_who_may_view_them(
    client, django_user_model
) -> None:  # noqa: ANN001
    customer = Customer.objects.create(external_id="c-1", name="Eve", email="eve@example.com", marketing_consent=True)
    alert = _alert(customer, _rule())
    Intervention.objects.create(
        alert=alert, customer=customer, kind="coupon_email", status="pending", coupon_code="ABCD-EFGH-JKLM-NPQR",
        coupon_discount_percent=15, idempotency_key="k-1",
    )  # fmt: skip
    page = reverse("admin:customers_customer_change", args=[customer.pk])
    client.force_login(_staff(django_user_model, "support", "view_customer"))
    content = client.get(page).content.decode()
    assert "ABCD-EFGH-JKLM-NPQR" not in content and f"#{alert.pk}</a>" not in content
    assert "Not shown: viewing interventions" in content and "Not shown: viewing alerts" in content
    client.force_login(_staff(django_user_model, "crm", "view_customer", "view_alert", "view_intervention"))
    content = client.get(page).content.decode()
    assert "ABCD-EFGH-JKLM-NPQR" in content and f"#{alert.pk}</a>" in content


def test_failed_admin_logins_are_limited_per_account_and_address(client, django_user_model, settings) -> None:  # noqa: ANN001
    from django.core.cache import cache

    cache.clear()
    settings.ADMIN_LOGIN_MAX_FAILURES = 3
    django_user_model.objects.create_user("ops", password="Correct-horse-42", is_staff=True)
    url = reverse("admin:login")

    def attempt(password: str, address: str = "10.0.0.1", username: str = "ops") -> int:
        return client.post(url, {"username": username, "password": password}, REMOTE_ADDR=address).status_code

    assert [attempt(f"guess-{n}") for n in range(3)] == [200, 200, 200]  # the form again, with its error
    assert attempt("guess-3") == 429 and attempt("Correct-horse-42") == 429  # locked, even the right password
    assert attempt("Correct-horse-42", address="10.0.0.2") == 302  # from elsewhere the account still works
    client.logout()
    assert attempt("whatever", username="someone-else") == 200  # other accounts are not locked from there
    # From all addresses together, five times the limit locks the account everywhere for the window.
    for n in range(15):
        attempt(f"guess-{n}", address=f"10.1.0.{n}")
    assert attempt("Correct-horse-42", address="10.2.0.1") == 429
    cache.clear()  # the window passed
    assert attempt("Correct-horse-42", address="10.0.0.1") == 302


def test_failed_logins_count_while_the_guesser_holds_a_session_and_whatever_the_spelling(
    client,
    django_user_model,
    settings,  # noqa: ANN001
) -> None:
    from django.core.cache import cache

    cache.clear()
    settings.ADMIN_LOGIN_MAX_FAILURES = 3
    django_user_model.objects.create_user("root", password="Correct-horse-42", is_staff=True, is_superuser=True)
    client.force_login(django_user_model.objects.create_user("clerk", password="clerk-pw-123", is_staff=True))
    url = reverse("admin:login")

    def attempt(username: str, n: int) -> int:
        return client.post(url, {"username": username, "password": f"guess-{n}"}, REMOTE_ADDR="10.0.0.9").status_code

    # A staff session of one's own made every failed guess read as a login (the failures were cleared).
    assert [attempt("root", n) for n in range(4)] == [200, 200, 200, 429]
    cache.clear()
    # "ｒoot" (a fullwidth r) logs in as root, as the login form normalises it: it shares root's counters.
    spellings = ["root", "\uff52oot", "r\uff4fot", "ROOT"]
    assert [attempt(name, n) for n, name in enumerate(spellings)] == [200, 200, 200, 429]
