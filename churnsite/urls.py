from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from churnsite.dashboard.views import dashboard_view
from churnsite.views import admin_login, healthz

admin.site.site_header = "churnsite: churn early warning"
admin.site.site_title = "churnsite"
admin.site.index_title = "Customers at risk, models and retention"
admin.site.site_url = None  # the site has no page at "/": no "View site" link that answers 404
admin.site.index_template = "churnsite/admin_index.html"  # adds the dashboard link

# Unknown paths and crashes under /api/ answer in the API's JSON error envelope; elsewhere Django's pages.
handler404 = "churnsite.api.not_found_handler"
handler500 = "churnsite.api.server_error_handler"

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("admin/dashboard/", dashboard_view, name="churn-dashboard"),
    path("admin/login/", admin_login, name="churn-admin-login"),  # the admin's own, with failed logins limited
    path("admin/", admin.site.urls),
    path("api/v1/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/v1/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path(
        "api/v1/redoc/",
        SpectacularRedocView.as_view(url_name="api-schema", template_name="churnsite/redoc.html"),
        name="api-redoc",
    ),
    path("api/v1/", include("customers.urls")),
    path("api/v1/", include("predictions.urls")),
    path("api/v1/", include("alerts.urls")),
    path("", include("alerts.public_urls")),
]
