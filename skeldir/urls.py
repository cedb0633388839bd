from django.contrib import admin
from django.urls import include, path

from skeldir.health import healthz, readyz

urlpatterns = [
    path("admin/", admin.site.urls),
    # The app's routes: the tenant API under api/llm/ and the metrics scrape.
    path("", include("llm.urls")),
    # Operations: probes (no tenant, no tenant data).
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
]
