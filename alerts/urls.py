"""REST routes of the alerts app, mounted under /api/v1/."""

from __future__ import annotations

from django.urls import path

from alerts.views import (
    AlertDetailView,
    AlertListView,
    AlertRuleDetailView,
    AlertRuleListView,
    AlertRuleUpliftView,
    AlertSendCouponView,
    AlertTransitionView,
    InterventionDetailView,
    InterventionListView,
)

urlpatterns = [
    path("alert-rules/", AlertRuleListView.as_view(), name="alert-rule-list"),
    path("alert-rules/<int:pk>/", AlertRuleDetailView.as_view(), name="alert-rule-detail"),
    path("alert-rules/<int:pk>/uplift/", AlertRuleUpliftView.as_view(), name="alert-rule-uplift"),
    path("alerts/", AlertListView.as_view(), name="alert-list"),
    path("alerts/<int:pk>/", AlertDetailView.as_view(), name="alert-detail"),
    path("alerts/<int:pk>/transition/", AlertTransitionView.as_view(), name="alert-transition"),
    path("alerts/<int:pk>/send-coupon/", AlertSendCouponView.as_view(), name="alert-send-coupon"),
    path("interventions/", InterventionListView.as_view(), name="intervention-list"),
    path("interventions/<int:pk>/", InterventionDetailView.as_view(), name="intervention-detail"),
]
