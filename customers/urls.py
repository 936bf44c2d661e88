"""REST routes of the customers app, mounted under /api/v1/."""

from __future__ import annotations

from django.urls import path

from customers.views import CustomerDetailView, CustomerExportView, CustomerListView, IngestView

urlpatterns = [
    path("customers/", CustomerListView.as_view(), name="customer-list"),
    path("customers/export.csv", CustomerExportView.as_view(), name="customer-export"),
    path("customers/<int:pk>/", CustomerDetailView.as_view(), name="customer-detail"),
    path("ingest/<str:kind>", IngestView.as_view(), name="ingest"),
]
