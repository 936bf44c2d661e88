from __future__ import annotations

import csv
import io
import threading
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.admin.sites import site
from django.core import mail
from django.db import connection, connections
from django.test import Client, RequestFactory
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from alerts.models import ActionKind, Alert, AlertRule, AuditEntry, Intervention, InterventionStatus, TriggerKind
from alerts.services import MANUAL_RULE_NAME, customer_send_coupon
from customers.admin import EstimatedCountPaginator
from customers.models import Customer, Event, ImportRun, Message, Order
from customers.selectors import customer_timeline, customers_with_order_stats
from predictions.models import ChurnScore, ModelVersion
from predictions.selectors import customers_to_score
from predictions.services.scoring import risk_tier
from tests.predictions.conftest import store, train  # noqa: F401 - the store fixture, used by the rescore test

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SCRIPT = "<script>alert('x')</script>"


@pytest.fixture
def customer() -> Customer:
    customer = Customer.objects.create(
        external_id="c-1", name=f"Eve {SCRIPT}", email="eve@example.com", segment="premium", country="US"
    )
    Order.objects.create(external_id="o-1", customer=customer, placed_at=T0, amount=Decimal("30.00"))
    Order.objects.create(
        external_id="o-2",
        customer=customer,
        placed_at=T0 + timedelta(days=2),
        amount=Decimal("12.00"),
        status="returned",
    )
    Event.objects.create(
        external_id="e-1",
        customer=customer,
        kind="search",
        occurred_at=T0 + timedelta(days=1),
        properties={"query": SCRIPT},
    )
    Message.objects.create(
        external_id="m-1",
        customer=customer,
        conversation_id="v-1",
        sent_at=T0 + timedelta(days=3),
        text=f"my parcel is late {SCRIPT}",
    )
    return customer


def test_every_customers_admin_page_renders(admin_client, customer: Customer) -> None:
    ImportRun.objects.create(
        kind="orders", source="orders.csv", errors=[{"row": 2, "field": "amount", "reason": SCRIPT}]
    )
    for model in (Customer, Order, Event, Message, ImportRun):
        name = model._meta.model_name
        changelist = admin_client.get(reverse(f"admin:customers_{name}_changelist"))
        first = model.objects.first()
        detail = admin_client.get(reverse(f"admin:customers_{name}_change", args=[first.pk]))
        assert (changelist.status_code, detail.status_code) == (200, 200), name
        assert SCRIPT.encode() not in changelist.content + detail.content, name


def test_customer_page_shows_the_timeline_newest_first_with_customer_text_escaped(
    admin_client, customer: Customer
) -> None:
    response = admin_client.get(reverse("admin:customers_customer_change", args=[customer.pk]))

    html = response.content.decode()
    message = Message.objects.get(external_id="m-1")
    assert SCRIPT not in html
    assert f'href="{reverse("admin:customers_message_change", args=[message.pk])}"' in html
    assert "my parcel is late &lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    positions = [html.index(marker) for marker in ("conversation v-1", "order o-2", "query=&lt;script", "order o-1")]
    assert positions == sorted(positions), "timeline is not newest first"


def test_timeline_merges_orders_events_and_messages_and_stops_at_the_limit(customer: Customer) -> None:
    everything = customer_timeline(customer=customer)
    newest_two = customer_timeline(customer=customer, limit=2)

    assert [(entry.kind, entry.at) for entry in everything] == [
        ("message", T0 + timedelta(days=3)),
        ("order", T0 + timedelta(days=2)),
        ("event", T0 + timedelta(days=1)),
        ("order", T0),
    ]
    assert newest_two == everything[:2]


def test_order_stats_count_orders_and_completed_revenue_per_customer(customer: Customer) -> None:
    Customer.objects.create(external_id="c-2")

    stats = {row.external_id: row for row in customers_with_order_stats()}

    assert (stats["c-1"].order_count, stats["c-1"].completed_revenue) == (2, Decimal("30.00"))
    assert stats["c-1"].last_order_at == T0 + timedelta(days=2)
    assert (stats["c-2"].order_count, stats["c-2"].completed_revenue, stats["c-2"].last_order_at) == (0, 0, None)


@pytest.mark.parametrize("model", [Event, ImportRun])
def test_event_and_import_run_admin_are_read_only(admin_client, admin_user, customer: Customer, model) -> None:
    ImportRun.objects.create(kind="events", source="api")
    obj = model.objects.first()
    name = model._meta.model_name
    request = RequestFactory().get("/")
    request.user = admin_user
    model_admin = site._registry[model]

    add = admin_client.get(reverse(f"admin:customers_{name}_add"))
    delete = admin_client.post(reverse(f"admin:customers_{name}_delete", args=[obj.pk]), {"post": "yes"})
    change = admin_client.post(reverse(f"admin:customers_{name}_change", args=[obj.pk]), {"kind": "tampered"})

    assert (add.status_code, delete.status_code, change.status_code) == (403, 403, 403)
    permissions = (
        model_admin.has_add_permission(request),
        model_admin.has_change_permission(request, obj),
        model_admin.has_delete_permission(request, obj),
    )
    assert permissions == (False, False, False)
    assert model.objects.filter(pk=obj.pk).exists()


def test_export_action_downloads_a_formula_neutralised_csv(admin_client, customer: Customer) -> None:
    other = Customer.objects.create(
        external_id='=HYPERLINK("http://evil.example")', name="@bob", email="+1@example.com"
    )

    response = admin_client.post(
        reverse("admin:customers_customer_changelist"),
        {"action": "export_customers_csv", "_selected_action": [customer.pk, other.pk]},
    )

    assert response["Content-Type"].startswith("text/csv")
    assert response.streaming  # a line at a time: a "select all" of the whole store is never held whole
    body = b"".join(response.streaming_content)
    assert body.startswith("\ufeff".encode())
    rows = list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"))))
    assert [row["external_id"] for row in rows] == ["c-1", '\'=HYPERLINK("http://evil.example")']
    assert (rows[1]["name"], rows[1]["email"]) == ("'@bob", "'+1@example.com")


def test_message_export_action_neutralises_customer_text(admin_client, customer: Customer) -> None:
    message = Message.objects.create(
        external_id="m-2", customer=customer, conversation_id="v-2", sent_at=T0, text='=IMPORTXML("http://x")'
    )

    response = admin_client.post(
        reverse("admin:customers_message_changelist"),
        {"action": "export_rows_csv", "_selected_action": [message.pk]},
    )

    assert response.streaming
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode("utf-8-sig"))))
    assert [(row["external_id"], row["customer__external_id"], row["text"]) for row in rows] == [
        ("m-2", "c-1", '\'=IMPORTXML("http://x")')
    ]


def test_opt_out_action_opts_out_and_keeps_an_earlier_opt_out_time(admin_client, customer: Customer) -> None:
    earlier = datetime(2025, 1, 1, tzinfo=UTC)
    already = Customer.objects.create(external_id="c-2", marketing_consent=True, opted_out_at=earlier)

    admin_client.post(
        reverse("admin:customers_customer_changelist"),
        {"action": "opt_out_customers", "_selected_action": [customer.pk, already.pk]},
    )

    customer.refresh_from_db()
    already.refresh_from_db()
    assert customer.opted_out_at is not None and not customer.can_be_contacted
    assert already.opted_out_at == earlier


def test_customer_list_searches_by_email_and_filters_by_opt_out(admin_client, customer: Customer) -> None:
    Customer.objects.create(external_id="c-2", name="Opted Olga", email="olga@example.com", opted_out_at=T0)
    url = reverse("admin:customers_customer_changelist")

    by_email = admin_client.get(url, {"q": "olga@example"}).context["cl"].result_list
    opted_out = admin_client.get(url, {"opted_out": "yes"}).context["cl"].result_list
    premium = admin_client.get(url, {"segment": "premium"}).context["cl"].result_list

    assert [c.external_id for c in by_email] == ["c-2"]
    assert [c.external_id for c in opted_out] == ["c-2"]
    assert [c.external_id for c in premium] == ["c-1"]


def test_event_list_filters_by_kind(admin_client, customer: Customer) -> None:
    Event.objects.create(external_id="e-2", customer=customer, kind="login", occurred_at=T0)

    result = admin_client.get(reverse("admin:customers_event_changelist"), {"kind": "login"}).context["cl"].result_list

    assert [event.external_id for event in result] == ["e-2"]


def test_event_paginator_counts_small_or_filtered_tables_exactly(customer: Customer) -> None:
    Event.objects.create(external_id="e-2", customer=customer, kind="login", occurred_at=T0)

    assert EstimatedCountPaginator(Event.objects.order_by("-pk"), 100).count == 2
    assert EstimatedCountPaginator(Event.objects.filter(kind="login").order_by("-pk"), 100).count == 1


@pytest.mark.services
def test_event_paginator_uses_the_planner_estimate_for_a_large_unfiltered_postgresql_table(customer: Customer) -> None:
    Event.objects.bulk_create(
        Event(external_id=f"bulk-{n}", customer=customer, kind="page_view", occurred_at=T0) for n in range(300)
    )
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {Event._meta.db_table}")
        # An estimate unlike the true count (301), so that only asking the planner can give it.
        cursor.execute("UPDATE pg_class SET reltuples = 5000 WHERE oid = to_regclass(%s)", [Event._meta.db_table])

    class SmallThreshold(EstimatedCountPaginator):
        exact_below = 10

    assert connection.vendor == "postgresql"
    paginator = SmallThreshold(Event.objects.order_by("-pk"), 100)
    assert (paginator.count, paginator.count_is_estimate) == (5000, True)
    assert SmallThreshold(Event.objects.filter(kind="search").order_by("-pk"), 100).count == 1
    filtered = SmallThreshold(Event.objects.filter(kind="page_view").order_by("-pk"), 100)  # the query plan's rows
    assert filtered.count >= 10 and filtered.count_is_estimate


# --- The CRM staff list and customer page: risk, alerts, interventions, actions ---------------------------------

EVIDENCE = "The parcel never came <script>alert('x')</script> and nobody answers."


def _model_version(name: str = "champion-test", status: str = "ready") -> ModelVersion:
    return ModelVersion.objects.create(name=name, model_type="lightgbm", status=status)


def _score(customer: Customer, version: ModelVersion, probability: float, at: datetime, **fields) -> ChurnScore:
    factors = fields.pop(
        "top_factors",
        [
            {"factor": "message: delivery complaint", "direction": "raises", "weight": 0.81, "evidence": EVIDENCE},
            {"factor": "days since last order", "direction": "raises", "weight": 0.4, "evidence": "days = 62"},
            {"factor": "orders in 90 days", "direction": "lowers", "weight": 0.1, "evidence": "orders_90d = 3"},
        ],
    )
    return ChurnScore.objects.create(
        customer=customer,
        model_version=version,
        as_of=at,
        probability=probability,
        risk_tier=risk_tier(probability),
        top_factors=factors,
        **fields,
    )


def _rule(name: str = "Top risk: coupon", **fields) -> AlertRule:
    return AlertRule.objects.create(
        name=name, trigger=TriggerKind.PROBABILITY, threshold=0.5, action=ActionKind.COUPON_EMAIL,
        holdout_fraction=0, **fields,
    )  # fmt: skip


def _alert(customer: Customer, rule: AlertRule, score: ChurnScore | None = None, **fields) -> Alert:
    values = {
        "period_start": T0.date(),
        "as_of": T0,
        "probability": score.probability if score else 0.7,
        "risk_tier": score.risk_tier if score else "high",
        "top_factors": score.top_factors if score else [],
        **fields,
    }
    return Alert.objects.create(customer=customer, rule=rule, score=score, **values)


@pytest.fixture
def scored() -> dict[str, Customer]:
    """Three customers: rising to high risk with an open alert, low risk, and never scored."""
    version = _model_version()
    rising = Customer.objects.create(
        external_id="c-rise", name="Rita Rising", email="rita@example.com", segment="vip", marketing_consent=True
    )
    steady = Customer.objects.create(external_id="c-low", name="Sam Steady", email="sam@example.com", segment="basic")
    new = Customer.objects.create(external_id="c-new", name="Nina New", email="nina@example.com", segment="basic")
    _score(rising, version, 0.40, T0 - timedelta(days=7))
    latest = _score(rising, version, 0.72, T0)
    _score(steady, version, 0.12, T0)
    _alert(rising, _rule(), latest)
    return {"rising": rising, "steady": steady, "new": new}


def _changelist(admin_client, **params):
    return admin_client.get(reverse("admin:customers_customer_changelist"), params)


def test_customer_list_shows_tier_probability_change_last_score_and_open_alert_highest_risk_first(
    admin_client, scored: dict[str, Customer]
) -> None:
    response = _changelist(admin_client)

    html = response.content.decode()
    rows = list(response.context["cl"].result_list)
    alert = Alert.objects.get(customer=scored["rising"])
    assert [c.external_id for c in rows] == ["c-rise", "c-low", "c-new"], "not ordered by probability, desc"
    assert 'class="risk-badge risk-high"' in html and 'class="risk-badge risk-low"' in html and "not scored" in html
    assert "72.0%" in html and "12.0%" in html
    assert "risk-change-up" in html and "+32.0 pts" in html and "first score" in html
    assert (
        f'href="{reverse("admin:alerts_alert_change", args=[alert.pk])}" class="open-alert">yes (#{alert.pk})' in html
    )
    assert rows[0].latest_scored_at == T0 and rows[2].latest_scored_at is None
    assert f'<td class="field-last_scored">{timezone.localtime(T0):%Y-%m-%d %H:%M}</td>' in html


def test_customer_list_change_arrow_is_down_or_flat_by_the_size_of_the_change(admin_client) -> None:
    version = _model_version()
    falling = Customer.objects.create(external_id="c-fall")
    flat = Customer.objects.create(external_id="c-flat")
    for customer, before, after in ((falling, 0.8, 0.5), (flat, 0.5, 0.503)):
        _score(customer, version, before, T0 - timedelta(days=1))
        _score(customer, version, after, T0)

    html = _changelist(admin_client).content.decode()

    assert "risk-change-down" in html and "-30.0 pts" in html
    assert "risk-change-flat" in html and "+0.3 pts" in html


def test_customer_list_filters_by_tier_open_alert_segment_and_opt_out_and_searches(
    admin_client, scored: dict[str, Customer]
) -> None:
    Customer.objects.filter(pk=scored["steady"].pk).update(opted_out_at=T0)

    def ids(**params) -> list[str]:
        return [c.external_id for c in _changelist(admin_client, **params).context["cl"].result_list]

    assert ids(risk_tier="high") == ["c-rise"]
    assert ids(risk_tier="low") == ["c-low"]
    assert ids(risk_tier="none") == ["c-new"]
    assert ids(open_alert="yes") == ["c-rise"]
    assert ids(open_alert="no") == ["c-low", "c-new"]
    assert ids(segment="basic") == ["c-low", "c-new"]
    assert ids(opted_out="yes") == ["c-low"]
    assert ids(q="c-new") == ["c-new"]
    assert ids(q="rita@") == ["c-rise"]
    assert ids(q="Steady") == ["c-low"]


def test_customer_list_sorts_by_probability_both_ways_with_unscored_last_when_descending(
    admin_client, scored: dict[str, Customer]
) -> None:
    column = list(site._registry[Customer].list_display).index("probability")
    # Admin columns count from 1, after the action checkbox column (index 0).

    def ids(order: str) -> list[str]:
        return [c.external_id for c in _changelist(admin_client, o=order).context["cl"].result_list]

    assert ids(f"-{column + 1}") == ["c-rise", "c-low", "c-new"]
    assert ids(f"{column + 1}") == ["c-new", "c-low", "c-rise"]


def test_a_page_of_50_customers_costs_the_same_few_queries_as_a_page_of_5(
    admin_client, django_assert_max_num_queries
) -> None:
    version = _model_version()
    rule = _rule()
    customers = Customer.objects.bulk_create(
        Customer(external_id=f"bulk-{n:03d}", name=f"Bulk {n}", segment=f"s{n % 3}") for n in range(60)
    )
    for n, customer in enumerate(customers):
        _score(customer, version, 0.3, T0 - timedelta(days=1))
        score = _score(customer, version, (n % 97) / 100, T0)
        if n % 2:
            _alert(customer, rule, score)
        Order.objects.create(external_id=f"bulk-o-{n}", customer=customer, placed_at=T0, amount=Decimal(10))

    with CaptureQueriesContext(connection) as small:
        _changelist(admin_client, segment="s0")  # 20 customers
    with django_assert_max_num_queries(10):
        response = _changelist(admin_client)

    assert len(response.context["cl"].result_list) == 50
    assert 'class="open-alert"' in response.content.decode()
    with CaptureQueriesContext(connection) as page:
        _changelist(admin_client)
    assert len(page.captured_queries) == len(small.captured_queries), "a query per row crept into the list"


def test_customer_page_shows_chart_factors_with_escaped_evidence_alerts_interventions_and_buttons(
    admin_client, scored: dict[str, Customer]
) -> None:
    customer = scored["rising"]
    alert = Alert.objects.get(customer=customer)
    intervention = Intervention.objects.create(
        alert=alert, customer=customer, kind=ActionKind.COUPON_EMAIL, status=InterventionStatus.SUPPRESSED,
        reason="no marketing consent", idempotency_key="test-key-1",
    )  # fmt: skip

    response = admin_client.get(reverse("admin:customers_customer_change", args=[customer.pk]))

    html = response.content.decode()
    panel = html[html.index('id="customer-risk"') : html.index('id="customer_form"')]
    assert response.status_code == 200
    assert "<svg" in panel and "Churn probability over time" in panel
    assert "<script>alert(" not in html
    assert "never came &lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; and nobody answers." in panel
    assert panel.index("message: delivery complaint") < panel.index("days since last order")
    assert f'href="{reverse("admin:alerts_alert_change", args=[alert.pk])}"' in panel
    assert f'href="{reverse("admin:alerts_intervention_change", args=[intervention.pk])}"' in panel
    assert "no marketing consent" in panel
    for name in ("rescore", "send_coupon", "opt_out"):
        assert f'action="{reverse(f"admin:customers_customer_{name}", args=[customer.pk])}"' in panel, name
    assert panel.count("csrfmiddlewaretoken") == 3
    assert 'name="request_key"' in panel


def test_customer_page_without_scores_says_so_and_draws_no_chart(admin_client, scored: dict[str, Customer]) -> None:
    response = admin_client.get(reverse("admin:customers_customer_change", args=[scored["new"].pk]))

    html = response.content.decode()
    assert "has no churn score yet" in html and 'id="risk-chart"' not in html


def test_page_of_a_customer_flagged_churned_does_not_offer_a_score_the_champion_refuses(admin_client) -> None:  # noqa: ANN001
    # Profile data: a customer imported with the churn flag set is left out of scoring (and Rescore now refuses).
    customer = Customer.objects.create(external_id="left-1", churned=True, attributes={"Contract": "Month-to-month"})

    html = admin_client.get(reverse("admin:customers_customer_change", args=[customer.pk])).content.decode()

    assert "has no churn score yet" in html and "marked churned" in html
    assert '"Rescore now" scores them' not in html


def _post(client, name: str, customer: Customer, data: dict | None = None):
    if data is None and name == "rescore":
        data = {"request_key": uuid.uuid4().hex}  # what the customer page's form sends
    return client.post(reverse(f"admin:customers_customer_{name}", args=[customer.pk]), data or {}, follow=True)


def _messages(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def test_rescore_without_a_usable_champion_says_why_and_stores_nothing(
    admin_client, scored: dict[str, Customer]
) -> None:
    before = ChurnScore.objects.count()

    no_champion = _messages(_post(admin_client, "rescore", scored["rising"]))
    _model_version(name="broken", status="champion")
    broken = _messages(_post(admin_client, "rescore", scored["rising"]))

    assert ChurnScore.objects.count() == before
    assert any("Not rescored: there is no champion model yet" in m for m in no_champion), no_champion
    assert any("Not rescored: the champion broken cannot score: no artifact path recorded" in m for m in broken)


@pytest.mark.django_db(transaction=True)
def test_send_coupon_with_an_open_alert_sends_one_coupon_and_actions_the_alert(
    admin_client, scored: dict[str, Customer]
) -> None:
    customer = scored["rising"]
    alert = Alert.objects.get(customer=customer)

    response = _post(admin_client, "send_coupon", customer, {"request_key": "a" * 32})

    intervention = Intervention.objects.get(customer=customer)
    alert.refresh_from_db()
    assert (intervention.alert_id, intervention.status, alert.status) == (alert.pk, "sent", "actioned")
    assert [m.to for m in mail.outbox] == [["rita@example.com"]] and intervention.coupon_code in mail.outbox[0].body
    assert any(f"Coupon email sent: code {intervention.coupon_code}" in m for m in _messages(response))


@pytest.mark.django_db(transaction=True)
def test_send_coupon_submitted_twice_sends_once_and_reports_the_same_intervention(
    admin_client, scored: dict[str, Customer]
) -> None:
    customer = scored["rising"]

    first = _post(admin_client, "send_coupon", customer, {"request_key": "b" * 32})
    second = _post(admin_client, "send_coupon", customer, {"request_key": "b" * 32})

    intervention = Intervention.objects.get(customer=customer)
    assert len(mail.outbox) == 1 and Alert.objects.filter(customer=customer).count() == 1
    assert f"intervention #{intervention.pk}" in _messages(first)[0]
    assert f"intervention #{intervention.pk}" in _messages(second)[0]
    assert _messages(first)[0].startswith("Coupon email sent")
    assert _messages(second)[0].startswith(f"Nothing sent again: this coupon email (code {intervention.coupon_code})")


@pytest.mark.django_db(transaction=True)
def test_send_coupon_without_an_open_alert_files_one_manual_alert_a_day_under_the_inactive_manual_rule(
    admin_client, scored: dict[str, Customer]
) -> None:
    customer = scored["steady"]
    Customer.objects.filter(pk=customer.pk).update(marketing_consent=True)

    _post(admin_client, "send_coupon", customer, {"request_key": "c" * 32})
    # Another click (a new form) the same day: the day's manual alert already has its coupon.
    again = _post(admin_client, "send_coupon", customer, {"request_key": "d" * 32})

    alert = Alert.objects.select_related("rule").get(customer=customer)
    intervention = Intervention.objects.get(customer=customer)
    assert (alert.rule.name, alert.rule.active, alert.rule.holdout_fraction) == (MANUAL_RULE_NAME, False, 0)
    assert (alert.probability, alert.risk_tier, alert.holdout) == (0.12, "low", False)
    assert alert.score == ChurnScore.objects.get(customer=customer)
    assert intervention.status == "sent" and len(mail.outbox) == 1
    assert f"intervention #{intervention.pk}" in _messages(again)[0]
    assert AuditEntry.objects.filter(alert=alert, action="alert_created", details__manual=True).exists()


@pytest.mark.django_db(transaction=True)
def test_send_coupon_to_an_opted_out_customer_records_a_suppressed_intervention_and_sends_nothing(
    admin_client, scored: dict[str, Customer]
) -> None:
    customer = scored["rising"]
    Customer.objects.filter(pk=customer.pk).update(opted_out_at=T0)

    response = _post(admin_client, "send_coupon", customer, {"request_key": "e" * 32})

    intervention = Intervention.objects.get(customer=customer)
    assert (intervention.status, intervention.reason, intervention.coupon_code) == ("suppressed", "opted out", None)
    assert mail.outbox == []
    assert any("No coupon sent: opted out" in m for m in _messages(response))


@pytest.mark.django_db(transaction=True)
def test_send_coupon_to_an_alert_in_the_control_group_sends_nothing(admin_client, scored: dict[str, Customer]) -> None:
    customer = scored["rising"]
    Alert.objects.filter(customer=customer).update(holdout=True)

    response = _post(admin_client, "send_coupon", customer, {"request_key": "f" * 32})

    assert Intervention.objects.get(customer=customer).status == "holdout" and mail.outbox == []
    assert any("control group of rule Top risk: coupon" in m for m in _messages(response))


@pytest.mark.django_db(transaction=True)
def test_manual_coupon_is_refused_while_the_customer_is_a_control_in_a_running_measurement(
    admin_client, scored: dict[str, Customer]
) -> None:
    customer = scored["rising"]
    alert = Alert.objects.get(customer=customer)
    Alert.objects.filter(pk=alert.pk).update(holdout=True, status="dismissed", as_of=timezone.now())
    Intervention.objects.create(
        alert=alert, customer=customer, kind=ActionKind.COUPON_EMAIL, status=InterventionStatus.HOLDOUT,
        reason="control group", idempotency_key="held-1",
    )  # fmt: skip

    response = _post(admin_client, "send_coupon", customer, {"request_key": "0" * 32})

    assert Intervention.objects.filter(customer=customer).count() == 1 and Alert.objects.count() == 1
    assert mail.outbox == []
    assert any("is in the control group of rule 'Top risk: coupon'" in m for m in _messages(response))


def test_send_coupon_without_the_form_key_does_nothing(admin_client, scored: dict[str, Customer]) -> None:
    response = _post(admin_client, "send_coupon", scored["rising"], {"request_key": "not-a-key"})

    assert not Intervention.objects.exists()
    assert any("reload the page" in m for m in _messages(response))


def test_opt_out_button_opts_out_once_and_keeps_the_first_time(admin_client, scored: dict[str, Customer]) -> None:
    customer = scored["rising"]

    first = _post(admin_client, "opt_out", customer)
    customer.refresh_from_db()
    opted_out_at = customer.opted_out_at
    second = _post(admin_client, "opt_out", customer)
    customer.refresh_from_db()

    assert opted_out_at is not None and customer.opted_out_at == opted_out_at and not customer.can_be_contacted
    assert any("Opted out of marketing" in m for m in _messages(first))
    assert any("Already opted out" in m for m in _messages(second))
    assert 'id="action-opt-out" value="Opt out" disabled' in second.content.decode()


@pytest.mark.parametrize("name", ["rescore", "send_coupon", "opt_out"])
def test_action_urls_refuse_anonymous_non_staff_unprivileged_staff_get_and_missing_csrf(
    client, django_user_model, scored: dict[str, Customer], name: str
) -> None:
    customer = scored["rising"]
    url = reverse(f"admin:customers_customer_{name}", args=[customer.pk])
    data = {"request_key": "1" * 32}

    anonymous = client.post(url, data)
    client.force_login(django_user_model.objects.create_user("shopper", password="pw-shopper-1"))
    not_staff = client.post(url, data)
    client.force_login(django_user_model.objects.create_user("intern", password="pw-intern-1", is_staff=True))
    no_permission = client.post(url, data)
    admin = django_user_model.objects.create_superuser("boss", "boss@example.com", "pw-boss-1")
    client.force_login(admin)
    get = client.get(url)
    csrf_client = Client(enforce_csrf_checks=True)
    csrf_client.force_login(admin)
    no_csrf = csrf_client.post(url, data)

    assert anonymous.status_code == not_staff.status_code == 302
    assert anonymous["Location"].startswith(reverse("admin:login"))
    assert not_staff["Location"].startswith(reverse("admin:login"))
    assert (no_permission.status_code, get.status_code, no_csrf.status_code) == (403, 405, 403)
    customer.refresh_from_db()
    assert customer.opted_out_at is None and not Intervention.objects.exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("store")
def test_rescore_now_stores_a_champion_score_at_now_with_factors(admin_client) -> None:
    version = ModelVersion.objects.get(training_run=train())
    customer = customers_to_score(as_of=timezone.now()).first()
    before = timezone.now()

    response = _post(admin_client, "rescore", customer)

    score = ChurnScore.objects.filter(customer=customer, scoring_run__isnull=True).get()
    assert score.model_version == version and score.as_of >= before and score.top_factors[0]["factor"]
    assert score.risk_tier == risk_tier(score.probability)
    assert any(f"Rescored with {version.name}: {score.probability:.1%}" in m for m in _messages(response))
    page = admin_client.get(reverse("admin:customers_customer_change", args=[customer.pk])).content.decode()
    assert f"scored {timezone.localtime(score.as_of):%Y-%m-%d %H:%M} by {version.name}" in page


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_concurrent_double_submits_of_send_coupon_create_one_intervention_on_postgresql(
    django_user_model, scored: dict[str, Customer]
) -> None:
    staff = django_user_model.objects.create_superuser("ops", "ops@example.com", "pw-ops-12345")
    customer = scored["steady"]  # no open alert: the manual path, whose alert is created by the first request
    barrier = threading.Barrier(4)
    results: list[object] = [None] * 4

    def click(index: int) -> None:
        try:
            barrier.wait()
            results[index] = customer_send_coupon(customer=customer, actor="user:ops", user=staff, request_key="9" * 32)
        except Exception as error:
            results[index] = error
        finally:
            connections.close_all()

    threads = [threading.Thread(target=click, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert connection.vendor == "postgresql"
    assert all(isinstance(result, Intervention) for result in results), results
    assert len({result.pk for result in results}) == 1
    assert (
        Intervention.objects.filter(customer=customer).count() == 1
        and Alert.objects.filter(customer=customer).count() == 1
    )


def _everything_about(customer: Customer) -> dict[str, int]:
    return {
        "orders": Order.objects.filter(customer=customer).count(),
        "events": Event.objects.filter(customer=customer).count(),
        "messages": Message.objects.filter(customer=customer).count(),
        "scores": ChurnScore.objects.filter(customer=customer).count(),
        "alerts": Alert.objects.filter(customer=customer).count(),
        "interventions": Intervention.objects.filter(customer=customer).count(),
    }


def _scored_with_history(customer: Customer) -> Alert:
    """The customer fixture (orders, an event, a message) scored, alerted and sent a coupon."""
    score = _score(customer, _model_version(f"erase-test-{customer.pk}"), 0.8, T0)
    alert = _alert(customer, _rule(f"erase test {customer.pk}"), score)
    Intervention.objects.create(
        alert=alert, customer=customer, kind=ActionKind.COUPON_EMAIL, status=InterventionStatus.SENT,
        idempotency_key=f"erase-test-{customer.pk}", coupon_code=f"SAVE-ERASE-{customer.pk}", sent_at=T0,
    )  # fmt: skip
    AuditEntry.objects.create(actor="test", action="intervention_sent", alert=alert, details={"to": "masked"})
    return alert


def test_staff_may_erase_a_scored_customer_with_everything_about_them(admin_client, customer: Customer) -> None:
    _scored_with_history(customer)
    other = Customer.objects.create(external_id="c-2", name="Other", email="other@example.com")
    _scored_with_history(other)
    others_before = _everything_about(other)
    url = reverse("admin:customers_customer_delete", args=[customer.pk])

    page = admin_client.get(url)  # the confirmation lists what goes, and refuses nothing, even with scores
    assert page.status_code == 200 and b"doesn&#x27;t have permission to delete" not in page.content
    assert b"Churn score" in page.content or b"churn score" in page.content
    assert admin_client.post(url, {"post": "yes"}).status_code == 302

    assert not Customer.objects.filter(pk=customer.pk).exists()
    assert set(_everything_about(customer).values()) == {0}
    assert _everything_about(other) == others_before  # the other customer keeps everything
    erased = AuditEntry.objects.get(action="customers_erased")
    assert erased.details["customer_ids"] == [customer.pk] and erased.actor.startswith("user:")
    assert erased.details["rows_deleted"]["customers.Customer"] == 1
    # The audit log keeps its entries about the erased alert, unlinked.
    assert AuditEntry.objects.filter(action="intervention_sent", alert__isnull=True).count() == 1


def test_the_delete_selected_action_erases_scored_customers_and_view_only_staff_may_not(
    admin_client, customer: Customer, django_user_model
) -> None:
    from django.contrib.auth.models import Permission

    _scored_with_history(customer)
    viewer = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_customer"))
    as_viewer = Client()
    as_viewer.force_login(viewer)
    url = reverse("admin:customers_customer_delete", args=[customer.pk])
    assert as_viewer.post(url, {"post": "yes"}).status_code == 403
    assert Customer.objects.filter(pk=customer.pk).exists()

    changelist = reverse("admin:customers_customer_changelist")
    confirm = admin_client.post(changelist, {"action": "delete_selected", "_selected_action": [customer.pk]})
    assert confirm.status_code == 200 and b"doesn&#x27;t have permission" not in confirm.content
    done = admin_client.post(
        changelist, {"action": "delete_selected", "_selected_action": [customer.pk], "post": "yes"}
    )
    assert done.status_code == 302 and not Customer.objects.filter(pk=customer.pk).exists()
    assert set(_everything_about(customer).values()) == {0}
    assert AuditEntry.objects.get(action="customers_erased").details["customer_ids"] == [customer.pk]


def test_erasure_deletes_the_stored_responses_that_carry_the_customers_data(
    customer: Customer, django_user_model
) -> None:
    from alerts.models import IdempotencyRecord
    from customers.services import customers_erase

    user = django_user_model.objects.create_user("api")
    other = Customer.objects.create(external_id="c-2", name="Other", email="other@example.com")
    records = {
        # An API alert transition or coupon: the alert or intervention, factors quoting the customer's messages.
        "api-erased": {"id": 1, "customer": customer.pk, "top_factors": [{"evidence": "my parcel is late"}]},
        "api-other": {"id": 2, "customer": other.pk, "top_factors": []},
        "rule": {"id": 3, "name": "a rule"},
    }
    for key, body in records.items():
        IdempotencyRecord.objects.create(
            user=user, key=key, method="POST", path=f"/api/v1/{key}/", request_sha256="0" * 64,
            response_status=200, response_body=body,
        )  # fmt: skip
    # The customer page's rescore and coupon forms, keyed by the customer.
    for key, path in (
        (f"rescore:{customer.pk}:{'a' * 32}", reverse("admin:customers_customer_rescore", args=[customer.pk])),
        (f"customer-send-coupon:{'b' * 32}", f"customers/{customer.pk}/send-coupon"),
        (f"rescore:{other.pk}:{'c' * 32}", reverse("admin:customers_customer_rescore", args=[other.pk])),
    ):
        IdempotencyRecord.objects.create(
            user=user, key=key, method="POST", path=path, request_sha256="0" * 64, response_status=201,
            response_body={"probability": 0.9},
        )  # fmt: skip

    customers_erase(customers=Customer.objects.filter(pk=customer.pk), actor="test")

    assert set(IdempotencyRecord.objects.values_list("key", flat=True)) == {
        "api-other",
        "rule",
        f"rescore:{other.pk}:{'c' * 32}",
    }


def test_the_erasure_confirmation_summarises_a_customer_with_many_rows(admin_client, customer: Customer) -> None:
    Event.objects.bulk_create(
        Event(external_id=f"e-bulk-{n}", customer=customer, kind="page_view", occurred_at=T0) for n in range(300)
    )
    url = reverse("admin:customers_customer_delete", args=[customer.pk])
    with CaptureQueriesContext(connection) as queries:
        page = admin_client.get(url)
    assert page.status_code == 200
    # Counted, not listed one by one (Django's default lists every row: a page of 100k events for a busy customer).
    assert b"e-bulk-" not in page.content and page.content.count(b"<li>") < 30
    assert b"Events: 301" in page.content and b"Orders: 2" in page.content
    assert len(queries) < 40


def test_a_coupon_for_a_customer_erased_meanwhile_is_refused_and_writes_nothing(customer: Customer) -> None:
    from alerts.services import CouponNotAllowed
    from customers.services import customers_erase

    pk = customer.pk
    customers_erase(customers=Customer.objects.filter(pk=pk), actor="test")  # the page was open meanwhile

    with pytest.raises(CouponNotAllowed, match="no longer exists"):
        customer_send_coupon(customer=customer, actor="test")
    assert not Alert.objects.filter(customer_id=pk).exists()
    assert not Intervention.objects.filter(customer_id=pk).exists()


def test_the_message_search_matches_text_in_any_case_and_ids_and_can_use_an_index_for_each(
    admin_client,  # noqa: ANN001
    customer: Customer,
) -> None:
    from django.db import connection

    from customers.selectors import messages_search

    texts = {
        "late": "My parcel is LATE again, where is my refund?",
        "pending": "The refunded amount is pending approval.",
        "zh": "我的订单还没到，请退款",
        "other": "Thanks, that helps.",
    }
    for key, text in texts.items():
        Message.objects.create(
            external_id=f"search-{key}", customer=customer, conversation_id=f"conv-{key}", sent_at=T0, text=text
        )

    def found(query: str) -> set[str]:
        response = admin_client.get(reverse("admin:customers_message_changelist"), {"q": query})
        assert response.status_code == 200
        return {m.external_id.removeprefix("search-") for m in response.context["cl"].result_list} & set(texts)

    assert found("refund") == {"late", "pending"}, "a substring, as the admin's search always matched"
    assert found("late REFUND") == {"late"}, "every word, in any case"
    assert found('"is pending"') == {"pending"}, "a quoted phrase"
    assert found("订单") == {"zh"}, "inside a Chinese sentence"
    assert found("conv-other") == {"other"}, "a conversation id"
    assert found(customer.external_id) == set(texts), "a customer's external id"
    if connection.vendor == "postgresql":
        # The table is tiny, so the planner would read it whole anyway: forbid that to see what it could use.
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL enable_seqscan = off")
        plan = messages_search(messages=Message.objects.all(), text="refund").explain()
        assert "message_text_trigram" in plan and "Seq Scan" not in plan, plan
