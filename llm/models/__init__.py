"""The app's tables: the tenant directory and the tenant-sealed LLM tables (core), the global
price catalogue (prices), and the tenant-sealed budgets (budgets). See DESIGN.md, "Schema".

Ids are UUIDs generated in Python and, as a column default, by the database. Timestamps come
from the database clock (`db_default=Now()`). Money is integer micro-USD (`*_micros`,
10^-6 USD); the seed's `*_cents` columns are derived from it (llm/money.py).
"""

from llm.models.budgets import (
    AlertChannel,
    AlertDelivery,
    Budget,
    BudgetAlert,
    BudgetDecision,
    BudgetPeriod,
    BudgetReservation,
    BudgetState,
    Decision,
    DeliveryStatus,
    OnExceed,
    ReservationStatus,
)
from llm.models.core import (
    BudgetOptimizationJob,
    Investigation,
    JobStatus,
    LLMApiCall,
    LLMJob,
    LLMMonthlyCost,
    Tenant,
)
from llm.models.fields import new_request_id
from llm.models.prices import ModelPrice, TsTzRange

__all__ = [
    "AlertChannel",
    "AlertDelivery",
    "Budget",
    "BudgetAlert",
    "BudgetDecision",
    "BudgetOptimizationJob",
    "BudgetPeriod",
    "BudgetReservation",
    "BudgetState",
    "Decision",
    "DeliveryStatus",
    "Investigation",
    "JobStatus",
    "LLMApiCall",
    "LLMJob",
    "LLMMonthlyCost",
    "ModelPrice",
    "OnExceed",
    "ReservationStatus",
    "Tenant",
    "TsTzRange",
    "new_request_id",
]
