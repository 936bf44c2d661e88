"""The staff dashboard: staff only, linked from the admin index, charts inline as SVG, customer text escaped."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from churnsite.dashboard import selectors
from tests.api.conftest import api_data

pytestmark = pytest.mark.django_db
DASHBOARD_PERMISSIONS = ("customers.view_customer", "alerts.view_alert", "predictions.view_modelversion")


def _staff(django_user_model, name: str, permissions: tuple[str, ...]):  # noqa: ANN001, ANN202
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user(name, password="pw-ops-x", is_staff=True)
    for permission in permissions:
        app_label, codename = permission.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return user


@pytest.fixture
def staff_client(django_user_model) -> Client:  # noqa: ANN001
    client = Client()
    client.force_login(_staff(django_user_model, "ops", DASHBOARD_PERMISSIONS))
    return client


def test_dashboard_is_for_staff_who_may_view_customers_alerts_and_models(django_user_model) -> None:  # noqa: ANN001
    assert Client().get("/admin/dashboard/").status_code == 302, "anonymous users go to the admin login"
    shopper = Client()
    shopper.force_login(django_user_model.objects.create_user("shopper", password="pw-shopper-x"))
    assert shopper.get("/admin/dashboard/").status_code == 302
    for missing in DASHBOARD_PERMISSIONS:  # staff lacking any one of them: forbidden, as the admin pages are
        intern = Client()
        granted = tuple(p for p in DASHBOARD_PERMISSIONS if p != missing)
        intern.force_login(_staff(django_user_model, f"intern-{missing}", granted))
        assert intern.get("/admin/dashboard/").status_code == 403, missing


def test_the_dashboard_is_never_cached_as_the_admin_pages_are_not(staff_client: Client) -> None:
    response = staff_client.get("/admin/dashboard/")

    cache_control = response.headers.get("Cache-Control", "")
    assert "no-store" in cache_control and "private" in cache_control, response.headers
    assert staff_client.get("/admin/").headers.get("Cache-Control", "") == cache_control


def test_admin_index_links_to_the_dashboard(staff_client: Client) -> None:
    assert 'href="/admin/dashboard/"' in staff_client.get("/admin/").content.decode()


def test_empty_dashboard_renders_every_panel(staff_client: Client) -> None:
    page = staff_client.get("/admin/dashboard/").content.decode()
    assert page.count("<svg xmlns:xlink") == 5 and "No champion model yet." in page and "cdn" not in page.lower()


def test_dashboard_shows_scores_by_segment_and_escapes_segment_names(staff_client: Client) -> None:
    data = api_data()
    data["customers"][0].segment = "<script>alert(1)</script>"
    data["customers"][0].save()
    page = staff_client.get("/admin/dashboard/").content.decode()
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_risk_selectors_count_each_customer_once_by_newest_score() -> None:
    api_data()  # three customers scored 0.2, 0.5 and 0.8
    risk = selectors.risk_overview()
    assert risk.distribution == [0, 0, 1, 0, 0, 1, 0, 0, 1, 0]
    by_segment = {row.segment: (row.customers, row.high_risk) for row in risk.segments}
    assert by_segment == {"vip": (2, 1), "(none)": (1, 0)}
    assert sum(n for _, n in selectors.alerts_per_day(days=3)) == 2 and selectors.intervention_funnel()[0] == (
        "alerts",
        2,
    )


def test_the_risk_panels_are_one_grouped_query_whatever_the_customers_and_bin_the_edges(
    django_assert_num_queries,  # noqa: ANN001 - pytest-django fixture
) -> None:
    from tests.alerts.helpers import as_of, customer_make, model_version_make, score_make, scoring_run_make

    run = scoring_run_make(model_version_make(), at=as_of())
    with django_assert_num_queries(1):
        empty = selectors.risk_overview()
    assert empty.distribution == [0] * 10 and empty.segments == []
    for n, probability in enumerate([0.0, 0.05, 0.1, 0.35, 0.7, 0.95, 1.0]):
        score_make(customer_make(n, segment="vip" if n % 2 else "basic"), run, probability)
    with django_assert_num_queries(1):  # the same one query for 7 customers as for none
        overview = selectors.risk_overview(limit=1)
    assert overview.distribution == [2, 1, 0, 1, 0, 0, 0, 1, 0, 2]  # 0.0 in the first tenth, 1.0 in the last
    (basic,) = overview.segments  # the largest segment only
    assert (basic.segment, basic.customers, basic.high_risk) == ("basic", 4, 2)
    assert basic.mean_probability == pytest.approx((0.0 + 0.1 + 0.7 + 1.0) / 4)


@pytest.mark.parametrize("saved_days_ago", [0, 1], ids=["not yet due", "due now"])
def test_scheduled_runs_say_when_rescoring_runs_next(saved_days_ago: int) -> None:
    from datetime import timedelta

    from django.utils import timezone
    from django_celery_beat.models import PeriodicTask

    now = timezone.now()
    # Saved a day ago (as in a test database created before 02:00 UTC, the daily rescoring's time): due now.
    PeriodicTask.objects.filter(last_run_at=None).update(date_changed=now - timedelta(days=saved_days_ago))
    runs = selectors.scheduled_runs(now=now)
    rescoring = [run for run in runs if "rescore" in run.task or "scor" in run.name.lower()]
    assert rescoring, f"no rescoring schedule among {[run.name for run in runs]}"
    # Rounded to the nearest second: a schedule due now shows this second, up to half a second before ``now``.
    assert all(run.next_run_at is not None and run.next_run_at >= now.replace(microsecond=0) for run in rescoring)


@pytest.fixture
def tiny_store(settings, tmp_path) -> None:  # noqa: ANN001
    from customers.services import demo_store_generate
    from tests.predictions.conftest import STORE_END

    settings.CHURN_RESCORE_ON_PROMOTION = False
    settings.CHURN_ARTIFACT_DIR = tmp_path / "models"
    settings.CHURN_CACHE_DIR = tmp_path / "cache"
    demo_store_generate(customers=120, days=240, seed=3, end=STORE_END)


@pytest.mark.django_db(transaction=True)  # training runs in an on-commit task
def test_champion_model_card_draws_roc_calibration_and_lift_against_the_baselines(
    staff_client: Client,
    tiny_store: None,
) -> None:
    from predictions.models import ModelVersion
    from tests.predictions.conftest import train

    version = ModelVersion.objects.get(training_run=train())
    page = staff_client.get("/admin/dashboard/").content.decode()
    card = page[page.index("Champion model card") : page.index("Drift over time")]
    assert card.count("<svg xmlns:xlink") == 3, "ROC, calibration and lift charts"
    for text in ("ROC curve on the holdout", "Calibration on the holdout", "Top-decile lift on the holdout"):
        assert f"<!-- {text} -->" in card, text
    for label in ("this model (lightgbm)", "recency rule", "logistic regression", "LightGBM (features only)"):
        assert card.count(f"<!-- {label} -->") >= 3, f"{label} is not in every chart"
    assert "<!-- chance -->" in card and "<!-- perfectly calibrated -->" in card
    assert f"{version.model_card['holdout']['n']:,} ({version.model_card['holdout']['positives']:,} churned" in page


def test_a_champion_trained_before_model_cards_renders_with_a_note(staff_client: Client) -> None:
    from predictions.models import ModelVersion

    ModelVersion.objects.create(
        name="old-champion",
        model_type="lightgbm",
        status="champion",
        horizon_days=30,
        training_cutoffs=["2026-04-01T00:00:00+00:00", "2026-03-01T00:00:00+00:00"],
        metrics={"roc_auc": 0.8, "n": 200, "positive_rate": 0.25, "cutoff": "2026-04-01T00:00:00+00:00"},
    )
    page = staff_client.get("/admin/dashboard/").content.decode()
    assert "not recorded for this model" in page and "Champion model card" in page
    assert page.count("<svg xmlns:xlink") == 5, "the other panels only"
    assert "200 (50 churned, 25.0%)" in page and "2026-03-01" in page


def test_a_chart_is_drawn_again_only_when_what_it_shows_changes(staff_client: Client, monkeypatch) -> None:  # noqa: ANN001
    from churnsite.dashboard import charts, views

    monkeypatch.setattr(views, "_CHARTS", charts.ChartCache(maxsize=32), raising=False)  # none drawn yet
    drawn = []
    svg = charts._svg
    monkeypatch.setattr(charts, "_svg", lambda figure: drawn.append(figure) or svg(figure))

    first = staff_client.get("/admin/dashboard/").content.decode()
    on_first = len(drawn)
    again = staff_client.get("/admin/dashboard/").content.decode()
    on_second = len(drawn) - on_first
    api_data()  # scores, alerts and actions: every panel but the drift one changes
    changed = staff_client.get("/admin/dashboard/").content.decode()

    assert (on_first, on_second, len(drawn) - on_first) == (5, 0, 4), (on_first, on_second, len(drawn) - on_first)
    assert re.findall(r"<svg.*?</svg>", again, re.S) == re.findall(r"<svg.*?</svg>", first, re.S)
    assert "<!-- vip -->" in changed and "<!-- vip -->" not in first


def test_chart_cache_tells_apart_inputs_that_draw_differently() -> None:
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    from churnsite.dashboard.charts import ChartCache

    calls = []

    def chart(**inputs: object) -> str:
        calls.append(inputs)
        return f"<svg>{len(calls)}</svg>"

    cache = ChartCache(maxsize=2)
    noon = datetime(2026, 3, 9, 12, tzinfo=UTC)
    same_instant_in_shanghai = noon.astimezone(ZoneInfo("Asia/Shanghai"))
    drawn = [
        cache.draw(chart, x=[noon], values=[1]),
        cache.draw(chart, x=[noon], values=[1]),  # the only repeat
        cache.draw(chart, x=[same_instant_in_shanghai], values=[1]),  # another time axis
        cache.draw(chart, x=[noon], values=[1.0]),  # "1.0" on an axis, not "1"
        cache.draw(chart, x=[noon], values=[1]),  # evicted by the two before it
        cache.draw(chart, x=[noon], values=[object()]),  # no key: drawn every time
    ]
    assert drawn == [f"<svg>{n}</svg>" for n in (1, 1, 2, 3, 4, 5)], drawn
    # A chart with a NaN among its inputs is found again: each view added an entry otherwise,
    # pushing the other charts out.
    gap = [cache.draw(chart, values=[float("nan"), 0.5]) for _ in range(2)]
    assert gap == ["<svg>6</svg>"] * 2, gap
