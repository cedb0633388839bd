"""Writes, one module per capability; these are the names the rest of the app uses.

- tenants: the tenant directory and API keys
- accounting: one call row and its cost in the tenant's month (`call_transaction`)
- workers: the four stub workers, each one unit of work
- jobs: the investigation and budget-optimization lifecycle
- intake: accepting work from the API, checked as its worker will check it
- dispatch: sending tasks once the transaction commits
- batch: many calls in one transaction per tenant
- reconciliation: monthly rows (and budget states) checked against the calls
- prices: the catalogue's history, written as the owner
- budgets, settlement, budget_settings: admission under a tenant's caps, settlement, the caps
- alerts: threshold alerts, written once, delivered by email and signed webhook
"""

from llm.services.accounting import (
    ModelTotals,
    RecordedCall,
    add_to_monthly_costs,
    adjust_monthly_costs,
    record_api_call,
    record_monthly_costs,
    utc_month,
)
from llm.services.alerts import DELIVER_TASK_NAME as DELIVER_ALERT_TASK_NAME
from llm.services.alerts import DeliveryFailed, configure_alerts, resend_pending_deliveries
from llm.services.alerts import deliver as deliver_alert
from llm.services.batch import (
    BATCH_ENDPOINTS,
    BATCH_MAX_CALLS,
    ApiCallToRecord,
    RecordedBatch,
    record_api_calls_batch,
    record_stub_calls_batch,
)
from llm.services.budget_settings import InvalidBudget, check_budget, remove_budget, set_budget
from llm.services.budgets import BudgetExceeded, ReservationMismatch, admit_call
from llm.services.dispatch import enqueue_on_commit
from llm.services.errors import (
    AmbiguousTenant,
    CostLimitExceeded,
    ForcedFailure,
    InvalidBatch,
    UnknownJob,
    UnknownTenant,
)
from llm.services.intake import request_llm_call, start_budget_optimization, start_investigation
from llm.services.jobs import sweep_stale_jobs
from llm.services.reconciliation import ReconciliationReport, reconcile_monthly_costs
from llm.services.settlement import release_call, settle_call, sweep_expired_reservations
from llm.services.tenants import create_tenant, find_tenant, rotate_api_key
from llm.services.workers import (
    STUB_WORKERS,
    generate_explanation,
    optimize_budget,
    route_request,
    run_investigation,
)

__all__ = [
    "BATCH_ENDPOINTS",
    "BATCH_MAX_CALLS",
    "DELIVER_ALERT_TASK_NAME",
    "STUB_WORKERS",
    "AmbiguousTenant",
    "ApiCallToRecord",
    "BudgetExceeded",
    "CostLimitExceeded",
    "DeliveryFailed",
    "ForcedFailure",
    "InvalidBatch",
    "InvalidBudget",
    "ModelTotals",
    "ReconciliationReport",
    "RecordedBatch",
    "RecordedCall",
    "ReservationMismatch",
    "UnknownJob",
    "UnknownTenant",
    "add_to_monthly_costs",
    "adjust_monthly_costs",
    "admit_call",
    "check_budget",
    "configure_alerts",
    "create_tenant",
    "deliver_alert",
    "enqueue_on_commit",
    "find_tenant",
    "generate_explanation",
    "optimize_budget",
    "reconcile_monthly_costs",
    "record_api_call",
    "record_api_calls_batch",
    "record_monthly_costs",
    "record_stub_calls_batch",
    "release_call",
    "remove_budget",
    "request_llm_call",
    "resend_pending_deliveries",
    "rotate_api_key",
    "route_request",
    "run_investigation",
    "set_budget",
    "settle_call",
    "start_budget_optimization",
    "start_investigation",
    "sweep_expired_reservations",
    "sweep_stale_jobs",
    "utc_month",
]
