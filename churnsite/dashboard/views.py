"""The staff dashboard page (``/admin/dashboard/``), linked from the admin index."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.safestring import mark_safe
from django.views.decorators.cache import never_cache

from churnsite.dashboard import charts, selectors

_METRICS = ("roc_auc", "pr_auc", "lift_at_10", "brier", "ece")

# Charts drawn again only when what they show changes: the page's eight, for a few states of the data.
_CHARTS = charts.ChartCache(maxsize=32)


# The dashboard sums up customers' risk, alerts and actions, and the models: staff who may view those.
DASHBOARD_PERMISSIONS = ("customers.view_customer", "alerts.view_alert", "predictions.view_modelversion")


@never_cache  # it sums up customers' risk: never stored by browsers or shared caches, as admin pages are not
@staff_member_required
def dashboard_view(request: HttpRequest) -> HttpResponse:
    """Every panel is read by a selector and drawn as inline SVG (matplotlib escapes the text it draws)."""
    if not request.user.has_perms(DASHBOARD_PERMISSIONS):
        raise PermissionDenied
    risk = selectors.risk_overview()
    distribution, segments = risk.distribution, risk.segments
    per_day = selectors.alerts_per_day(days=30)
    funnel = selectors.intervention_funnel()
    versions = selectors.model_versions_metrics()
    champion, drift = selectors.champion_drift()
    bins = [f"{tenth / 10:.1f}-{(tenth + 1) / 10:.1f}" for tenth in range(len(distribution))]
    svg = {
        "distribution": _CHARTS.draw(
            charts.bar_svg,
            labels=bins if any(distribution) else [],
            values=distribution if any(distribution) else [],
            title="Customers by churn probability",
        ),
        "segments": _CHARTS.draw(
            charts.bar_svg,
            labels=[row.segment for row in segments],
            values=[row.mean_probability for row in segments],
            title="Mean churn probability by segment",
            ylabel="probability",
            horizontal=True,
        ),
        "alerts": _CHARTS.draw(
            charts.line_svg,
            x=[day for day, _ in per_day],
            series={"alerts": [n for _, n in per_day]},
            title="New alerts per day",
        ),
        "funnel": _CHARTS.draw(
            charts.bar_svg, labels=[name for name, _ in funnel], values=[n for _, n in funnel], title="Retention funnel"
        ),
        "drift": _CHARTS.draw(
            charts.line_svg,
            x=[timezone.localtime(event.checked_at) for event in drift],  # the page's time zone, not UTC
            series={
                "largest PSI": [event.max_psi for event in drift],
                "threshold": [event.threshold for event in drift],
            },
            title="Champion drift (population stability)",
        ),
    }
    card = selectors.model_card(champion) if champion else None
    if card is not None and card.models:
        svg |= _model_card_charts(card)
    context = {
        **admin.site.each_context(request),
        "title": "Churn dashboard",
        "charts": {name: mark_safe(text) for name, text in svg.items()},  # noqa: S308 - matplotlib output, text escaped
        "segments": segments,
        "funnel": funnel,
        "uplifts": selectors.rule_uplifts(),
        "champion": champion,
        "champion_metrics": [(name, (champion.metrics or {}).get(name)) for name in _METRICS] if champion else [],
        "card": card,
        "card_rows": [(model.label, [model.metrics.get(name) for name in _METRICS]) for model in card.models]
        if card
        else [],
        "versions": [(version, [version.metrics.get(name) for name in _METRICS]) for version in versions],
        "metric_names": _METRICS,
        "scheduled": selectors.scheduled_runs(),
    }
    return render(request, "churnsite/dashboard.html", context)


def _model_card_charts(card: selectors.ModelCard) -> dict[str, str]:
    """ROC, calibration and top-decile lift of the champion beside its baselines, all on its holdout."""
    return {
        "roc": _CHARTS.draw(
            charts.roc_svg,
            curves={model.label: model.roc for model in card.models if model.roc},
            title="ROC curve on the holdout",
        ),
        "calibration": _CHARTS.draw(
            charts.calibration_svg,
            curves={model.label: [(p, o) for p, o, _ in model.calibration] for model in card.models},
            title="Calibration on the holdout",
        ),
        "lift": _CHARTS.draw(
            charts.comparison_bar_svg,
            labels=[model.label for model in card.models],
            values=[model.metrics.get("lift_at_10") for model in card.models],
            title="Top-decile lift on the holdout",
            ylabel="churn rate in top 10% / overall",
            reference=1.0,
        ),
    }
