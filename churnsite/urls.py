from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from churnsite.views import healthz

admin.site.site_header = "churnsite: churn early warning"
admin.site.site_title = "churnsite"
admin.site.index_title = "Customers at risk, models and retention"

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("customers.urls")),
    path("api/v1/", include("predictions.urls")),
    path("api/v1/", include("alerts.urls")),
    path("", include("alerts.public_urls")),
]
