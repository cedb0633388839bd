"""Reconciliation: each tenant's monthly cost rows checked against its call rows, the source
of truth (append-only for the runtime role), and repaired on request."""

import logging
import uuid
from dataclasses import dataclass

from llm import selectors
from llm.selectors import MonthlyCostDrift
from llm.services.accounting import ModelTotals, adjust_monthly_costs
from skeldir.tenancy import tenant_context

logger = logging.getLogger(__name__)


@dataclass
class ReconciliationReport:
    tenants_checked: int = 0
    drifts: list[tuple[uuid.UUID, MonthlyCostDrift]] | None = None
    fixed: bool = False

    def __post_init__(self):
        self.drifts = self.drifts or []


def reconcile_monthly_costs(*, fix: bool = False) -> ReconciliationReport:
    """Check every tenant's monthly cost rows against its call rows; with `fix`, repair them.

    The repair adds the difference (actual minus recorded, per model) rather than overwriting,
    so calls recorded while it runs are kept: they add to both sides alike.
    """
    report = ReconciliationReport(fixed=fix)
    for tenant_id in selectors.iter_tenant_ids():
        with tenant_context(tenant_id):
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
        report.tenants_checked += 1
        report.drifts.extend((tenant_id, drift) for drift in drifts)
    return report


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
