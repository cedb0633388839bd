"""Writes, one module per capability; these are the names the rest of the app uses.

- tenants: the tenant directory and API keys
- accounting: one call row and its cost in the tenant's month (`call_transaction`)
- workers: the four stub workers, each one unit of work
- jobs: the investigation and budget-optimization lifecycle
- intake: accepting work from the API, checked as its worker will check it
- dispatch: sending tasks once the transaction commits
- batch: many calls in one transaction per tenant
- reconciliation: monthly rows checked against the calls
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
from llm.services.batch import (
    BATCH_ENDPOINTS,
    BATCH_MAX_CALLS,
    ApiCallToRecord,
    RecordedBatch,
    record_api_calls_batch,
    record_stub_calls_batch,
)
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
    "STUB_WORKERS",
    "AmbiguousTenant",
    "ApiCallToRecord",
    "CostLimitExceeded",
    "ForcedFailure",
    "InvalidBatch",
    "ModelTotals",
    "ReconciliationReport",
    "RecordedBatch",
    "RecordedCall",
    "UnknownJob",
    "UnknownTenant",
    "add_to_monthly_costs",
    "adjust_monthly_costs",
    "create_tenant",
    "enqueue_on_commit",
    "find_tenant",
    "generate_explanation",
    "optimize_budget",
    "reconcile_monthly_costs",
    "record_api_call",
    "record_api_calls_batch",
    "record_monthly_costs",
    "record_stub_calls_batch",
    "request_llm_call",
    "rotate_api_key",
    "route_request",
    "run_investigation",
    "start_budget_optimization",
    "start_investigation",
    "sweep_stale_jobs",
    "utc_month",
]
