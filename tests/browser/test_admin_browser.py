"""CRM staff in a real browser (headless Chromium): log in to the admin, open the highest-risk customer, read
why they are at risk, send a coupon, and find the intervention on the customer page and in the intervention
admin. A screenshot of each step goes to test-artifacts/browser/."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.core import mail
from django.utils import timezone

from alerts.models import ActionKind, Alert, AlertRule, Intervention, TriggerKind
from customers.models import Customer, Message, Order
from predictions.models import ChurnScore, ModelVersion
from predictions.services.scoring import risk_tier

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "pw-crm-staff-1234"
EVIDENCE = "I waited three weeks for my parcel <script>alert(1)</script> and nobody answered."
WAIT = 20


def _seed() -> Customer:
    """Six scored customers (each with a previous score), an open alert for the riskiest; returns the riskiest."""
    now = timezone.now()
    version = ModelVersion.objects.create(name="hybrid-browser-test", model_type="hybrid", status="champion")
    rule = AlertRule.objects.create(
        name="Top risk: coupon email", trigger=TriggerKind.PROBABILITY, threshold=0.6,
        action=ActionKind.COUPON_EMAIL, holdout_fraction=0,
    )  # fmt: skip
    riskiest = None
    for n, probability in enumerate((0.22, 0.91, 0.47, 0.05, 0.66, 0.31)):
        customer = Customer.objects.create(
            external_id=f"crm-{n}", name=f"Customer {n}", email=f"customer{n}@example.com",
            segment="vip" if n % 2 else "regular", marketing_consent=True,
        )  # fmt: skip
        Order.objects.create(
            external_id=f"crm-o-{n}", customer=customer, placed_at=now - timedelta(days=70), amount=Decimal("80.00")
        )
        Message.objects.create(
            external_id=f"crm-m-{n}", customer=customer, conversation_id=f"v-{n}", sent_at=now - timedelta(days=3),
            text=f"Hello. {EVIDENCE} Please help.",
        )  # fmt: skip
        for days, p in ((30, probability * 0.6), (14, probability * 0.8), (0, probability)):
            score = ChurnScore.objects.create(
                customer=customer, model_version=version, as_of=now - timedelta(days=days), probability=p,
                risk_tier=risk_tier(p),
                top_factors=[
                    {"factor": "support message (chat, 3 days ago)", "direction": "raises", "weight": 1.2,
                     "evidence": EVIDENCE},
                    {"factor": "days since the last order", "direction": "raises", "weight": 0.7,
                     "evidence": "days_since_last_order = 70"},
                    {"factor": "orders in the last year", "direction": "lowers", "weight": 0.2,
                     "evidence": "orders_365d = 1"},
                ],
            )  # fmt: skip
        if probability == 0.91:
            riskiest = customer
            Alert.objects.create(
                customer=customer, rule=rule, score=score, period_start=now.date(), as_of=score.as_of,
                probability=score.probability, risk_tier=score.risk_tier, top_factors=score.top_factors,
                customer_value=Decimal("80.00"), expected_loss=Decimal("72.80"),
            )  # fmt: skip
    assert riskiest is not None
    return riskiest


def test_staff_find_the_riskiest_customer_see_why_send_a_coupon_and_find_the_intervention(
    live_server, chromium, screenshots: Path, django_user_model
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    riskiest = _seed()
    django_user_model.objects.create_superuser("crm", "crm@example.com", PASSWORD)
    browser = chromium
    wait = WebDriverWait(browser, WAIT)

    def shot(name: str) -> None:
        # The whole page, not just the window: grow the window to the document's height for the picture.
        height = browser.execute_script("return Math.min(document.documentElement.scrollHeight, 6000)")
        browser.set_window_size(1680, max(int(height), 1000))
        browser.save_screenshot(str(screenshots / f"{name}.png"))
        browser.set_window_size(1680, 1000)

    # 1. Log in.
    browser.get(f"{live_server.url}/admin/")
    wait.until(ec.presence_of_element_located((By.ID, "id_username"))).send_keys("crm")
    browser.find_element(By.ID, "id_password").send_keys(PASSWORD)
    shot("01-login")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait.until(ec.presence_of_element_located((By.ID, "user-tools")))
    shot("02-admin-index")

    # 2. The customer list: highest risk first.
    browser.get(f"{live_server.url}/admin/customers/customer/")
    wait.until(ec.presence_of_element_located((By.ID, "result_list")))
    shot("03-customer-list")
    cells = browser.find_elements(By.CSS_SELECTOR, "#result_list td.field-probability")
    shown = [float(cell.text.rstrip("%")) for cell in cells]
    assert shown == sorted(shown, reverse=True) and shown[0] == 91.0, shown
    first_row = browser.find_element(By.CSS_SELECTOR, "#result_list tbody tr")
    assert "high" in first_row.find_element(By.CSS_SELECTOR, "td.field-risk_tier").text
    assert "+18.2 pts" in first_row.find_element(By.CSS_SELECTOR, "td.field-score_change").text
    assert first_row.find_element(By.CSS_SELECTOR, "td.field-open_alert").text.startswith("yes")

    # 3. The riskiest customer's page: why they are at risk, the quoted evidence shown as text.
    first_row.find_element(By.CSS_SELECTOR, "th.field-external_id a").click()
    factors = wait.until(ec.visibility_of_element_located((By.ID, "risk-factors")))
    assert browser.current_url.endswith(f"/admin/customers/customer/{riskiest.pk}/change/")
    assert "support message (chat, 3 days ago)" in factors.text and "days since the last order" in factors.text
    evidence = factors.find_element(By.CSS_SELECTOR, "q.evidence")
    assert evidence.is_displayed() and EVIDENCE in evidence.text, evidence.text
    assert browser.find_element(By.CSS_SELECTOR, "#risk-chart svg").is_displayed()
    assert "No interventions." in browser.find_element(By.ID, "customer-risk").text
    shot("04-customer-page")

    # 4. Send a coupon.
    browser.find_element(By.ID, "action-send-coupon").click()
    message = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "ul.messagelist li")))
    intervention = Intervention.objects.get(customer=riskiest)
    assert intervention.status == "sent" and [m.to for m in mail.outbox] == [[riskiest.email]]
    assert f"Coupon email sent: code {intervention.coupon_code}" in message.text, message.text
    shot("05-coupon-sent")

    # 5. The intervention on the customer page, and in the intervention admin.
    row = browser.find_element(By.CSS_SELECTOR, f"#customer-risk tr.intervention-{intervention.status}")
    assert f"#{intervention.pk}" in row.text and intervention.coupon_code in row.text
    browser.get(f"{live_server.url}/admin/alerts/intervention/?q={riskiest.external_id}")
    listed = wait.until(ec.presence_of_element_located((By.ID, "result_list")))
    assert intervention.coupon_code in listed.text and "sent" in listed.text
    shot("06-intervention-list")
    listed.find_element(By.CSS_SELECTOR, "th.field-id a").click()
    wait.until(ec.presence_of_element_located((By.ID, "content-main")))
    assert intervention.coupon_code in browser.find_element(By.ID, "content-main").text
    shot("07-intervention-page")
