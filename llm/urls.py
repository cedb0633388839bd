from django.urls import path

from llm.api import api_urls
from llm.metrics import metrics_view

urlpatterns = [
    path("api/llm/", api_urls()),
    # The Prometheus scrape (no tenant, no tenant data).
    path("metrics", metrics_view, name="metrics"),
]
