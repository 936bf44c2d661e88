"""REST routes of the predictions app, mounted under /api/v1/."""

from __future__ import annotations

from django.urls import path

from predictions import views

urlpatterns = [
    path("scores/", views.LatestScoreListView.as_view(), name="score-list"),
    path("customers/<int:pk>/score", views.RealtimeScoreView.as_view(), name="customer-score"),
    path(
        "customers/by-external-id/<path:external_id>/score",
        views.RealtimeScoreByExternalIdView.as_view(),
        name="customer-score-by-external-id",
    ),
    path("model-versions/", views.ModelVersionListView.as_view(), name="model-version-list"),
    path("model-versions/rollback", views.ModelVersionRollbackView.as_view(), name="model-version-rollback"),
    path("model-versions/<int:pk>/", views.ModelVersionDetailView.as_view(), name="model-version-detail"),
    path("model-versions/<int:pk>/promote", views.ModelVersionPromoteView.as_view(), name="model-version-promote"),
    path("training-runs/", views.TrainingRunListView.as_view(), name="training-run-list"),
    path("training-runs/<int:pk>/", views.TrainingRunDetailView.as_view(), name="training-run-detail"),
    path("scoring-runs/", views.ScoringRunListView.as_view(), name="scoring-run-list"),
]
