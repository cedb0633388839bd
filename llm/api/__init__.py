"""The tenant-facing HTTP API: `routes` (django-ninja) and `schemas` (its contracts)."""

from llm.api.routes import api, api_urls

__all__ = ["api", "api_urls"]
