from django.contrib import admin
from django.urls import include, path

from llm.metrics import metrics_view
from skeldir.health import healthz, readyz

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/llm/", include("llm.urls")),
    # Operations: probes and the Prometheus scrape (no tenant, no tenant data).
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
]
