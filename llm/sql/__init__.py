"""The raw SQL of the app: each statement says something the ORM cannot, with the reason
beside it, in the module of its capability (accounting, budgets); all of them are importable
from here (`sql.INSERT_API_CALL_SQL`).

Services (writes) and selectors (reads) execute these on Django's connection; the benchmark's
raw-SQL baseline runs the same text on plain psycopg. Parameters are always bound, never
formatted in. Schema, roles and policies are SQL too, but they live in the migrations.
"""

from llm.sql.accounting import (
    ADD_TO_MONTHLY_COSTS_SQL,
    ADJUST_MONTHLY_COSTS_SQL,
    CURRENT_UTC_MONTH_SQL,
    INSERT_API_CALL_SQL,
    INSERT_API_CALLS_BATCH_SQL,
    MONTHLY_COST_DRIFT_SQL,
    UNPRICED_MODELS_SQL,
)
from llm.sql.budgets import (
    ADJUST_BUDGET_STATE_SQL,
    ADMISSION_SQL,
    ADMIT_SQL,
    BUDGET_DRIFT_SQL,
    BUDGET_REMAINING_SQL,
    CREATE_BUDGET_STATE_SQL,
    FINISH_RESERVATION_SQL,
    INSERT_BUDGET_ALERT_SQL,
    LOCK_RESERVATION_PERIODS_SQL,
    RECONCILIATION_LOCK_SQL,
    RELEASE_BUDGET_PERIOD_SQL,
    RESERVE_BUDGET_SQL,
    SETTLE_BUDGET_PERIOD_SQL,
    SETTLE_RESERVATION_SQL,
    TENANT_HAS_BUDGET_SQL,
)

__all__ = [
    "ADD_TO_MONTHLY_COSTS_SQL",
    "ADJUST_BUDGET_STATE_SQL",
    "ADJUST_MONTHLY_COSTS_SQL",
    "ADMISSION_SQL",
    "ADMIT_SQL",
    "BUDGET_DRIFT_SQL",
    "BUDGET_REMAINING_SQL",
    "CREATE_BUDGET_STATE_SQL",
    "CURRENT_UTC_MONTH_SQL",
    "FINISH_RESERVATION_SQL",
    "INSERT_API_CALLS_BATCH_SQL",
    "INSERT_API_CALL_SQL",
    "INSERT_BUDGET_ALERT_SQL",
    "LOCK_RESERVATION_PERIODS_SQL",
    "MONTHLY_COST_DRIFT_SQL",
    "RECONCILIATION_LOCK_SQL",
    "RELEASE_BUDGET_PERIOD_SQL",
    "RESERVE_BUDGET_SQL",
    "SETTLE_BUDGET_PERIOD_SQL",
    "SETTLE_RESERVATION_SQL",
    "TENANT_HAS_BUDGET_SQL",
    "UNPRICED_MODELS_SQL",
]
