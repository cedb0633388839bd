"""The tenant-facing HTTP API: `routes` (django-ninja) and `schemas` (its contracts)."""

from llm.api.routes import api

__all__ = ["api"]
