"""The Django admin: tenant inspection (calls, months, jobs), budgets (the tenant's caps, its
decisions, alerts and reservations), and the price catalogue."""

from llm.admin import budgets, inspection, prices

__all__ = ["budgets", "inspection", "prices"]
