"""The tenant-facing HTTP API: `routes` (django-ninja), `schemas` (its contracts), `urls`."""

from llm.api.routes import api
from llm.api.urls import api_urls

__all__ = ["api", "api_urls"]
