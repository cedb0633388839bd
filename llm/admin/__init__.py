"""The Django admin: tenant inspection (calls, months, jobs), and the price catalogue."""

from llm.admin import inspection, prices

__all__ = ["inspection", "prices"]
