"""Reconciliation: each tenant's monthly cost rows and budget states checked against its call
rows, the source of truth (append-only for the runtime role), and its open reservations;
repaired on request by adding the differences."""

import logging
import uuid
from dataclasses import dataclass, field

from django.db import connection

from llm import selectors, sql
from llm.selectors import BudgetDrift, MonthlyCostDrift
from llm.services.accounting import ModelTotals, adjust_monthly_costs
from skeldir.tenancy import tenant_context

logger = logging.getLogger(__name__)


@dataclass
class ReconciliationReport:
    tenants_checked: int = 0
    drifts: list[tuple[uuid.UUID, MonthlyCostDrift]] = field(default_factory=list)
    budget_drifts: list[tuple[uuid.UUID, BudgetDrift]] = field(default_factory=list)
    fixed: bool = False


def reconcile_monthly_costs(*, fix: bool = False) -> ReconciliationReport:
    """Check every tenant's monthly cost rows against its call rows; with `fix`, repair them.

    The repair adds the difference (actual minus recorded, per model) rather than overwriting,
    so calls recorded while it runs are kept: they add to both sides alike.
    """
    report = ReconciliationReport(fixed=fix)
    for tenant_id in selectors.iter_tenant_ids():
        with tenant_context(tenant_id):
            if fix:
                _lock_repairs(tenant_id)
            drifts = selectors.find_monthly_cost_drift()
            for drift in drifts:
                logger.warning(
                    "monthly cost drift: tenant %s month %s recorded %s calls / %s µUSD, "
                    "calls add up to %s / %s%s",
                    tenant_id,
                    drift.month.isoformat(),
                    drift.recorded_calls,
                    drift.recorded_cost_micros,
                    drift.actual_calls,
                    drift.actual_cost_micros,
                    "; fixing" if fix else "",
                )
                if fix:
                    adjust_monthly_costs(
                        tenant_id=tenant_id,
                        month=drift.month,
                        breakdown=_breakdown_difference(drift),
                        totals=ModelTotals(
                            calls=drift.actual_calls - drift.recorded_calls,
                            cost_micros=drift.actual_cost_micros - drift.recorded_cost_micros,
                        ),
                    )
            budget_drifts = selectors.find_budget_drift()
            for drift in budget_drifts:
                logger.warning(
                    "budget drift: tenant %s %s from %s holds spent %s / reserved %s µUSD, "
                    "calls and open reservations add up to %s / %s%s",
                    tenant_id,
                    drift.period,
                    drift.period_start.isoformat(),
                    drift.recorded_spent_micros,
                    drift.recorded_reserved_micros,
                    drift.actual_spent_micros,
                    drift.actual_reserved_micros,
                    "; fixing" if fix else "",
                )
                if fix:
                    adjust_budget_state(tenant_id=tenant_id, drift=drift)
        report.tenants_checked += 1
        report.drifts.extend((tenant_id, drift) for drift in drifts)
        report.budget_drifts.extend((tenant_id, drift) for drift in budget_drifts)
    return report


def _lock_repairs(tenant_id: uuid.UUID) -> None:
    """One repair of a tenant at a time, until the transaction ends: two repairs reading the
    same drift would each add the difference. Taken before the drift is read."""
    with connection.cursor() as cursor:
        cursor.execute(sql.RECONCILIATION_LOCK_SQL, [str(tenant_id)])


def repair_budget_states(*, tenant_id: uuid.UUID) -> list[BudgetDrift]:
    """Inside the tenant: bring its budget states back to the calls and open reservations
    they count (set_budget runs it; reconciliation's --fix does the same)."""
    _lock_repairs(tenant_id)
    drifts = selectors.find_budget_drift()
    for drift in drifts:
        adjust_budget_state(tenant_id=tenant_id, drift=drift)
    return drifts


def adjust_budget_state(*, tenant_id: uuid.UUID, drift: BudgetDrift) -> None:
    """Add the differences found (never set totals): calls settled meanwhile moved both sides."""
    with connection.cursor() as cursor:
        cursor.execute(
            sql.ADJUST_BUDGET_STATE_SQL,
            {
                "tenant_id": tenant_id,
                "period": drift.period,
                "period_start": drift.period_start,
                "spent": drift.actual_spent_micros - drift.recorded_spent_micros,
                "reserved": drift.actual_reserved_micros - drift.recorded_reserved_micros,
            },
        )


def _breakdown_difference(drift: MonthlyCostDrift) -> dict[str, ModelTotals]:
    difference = {}
    for model in drift.recorded_breakdown.keys() | drift.actual_breakdown.keys():
        actual = drift.actual_breakdown.get(model, {})
        recorded = drift.recorded_breakdown.get(model, {})
        difference[model] = ModelTotals(
            calls=actual.get("calls", 0) - recorded.get("calls", 0),
            cost_micros=actual.get("cost_micros", 0) - recorded.get("cost_micros", 0),
        )
    return difference
