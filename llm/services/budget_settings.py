"""Budgets as operators set them (the admin, `manage.py set_budget`): never the tenant, who
has no route to them. Setting a cap also moves the cap of the periods in progress, so it
applies to the next admission; removing the budget makes the tenant unlimited again (calls
already admitted still settle)."""

import uuid
from collections.abc import Sequence

from django.db.models.functions import Now

from llm import prices
from llm.models import Budget, BudgetPeriod, BudgetState, OnExceed, Tenant
from llm.payloads import InvalidPayload
from llm.services.budgets import hour_start, month_start
from llm.services.reconciliation import repair_budget_states
from skeldir.tenancy import tenant_context


class InvalidBudget(InvalidPayload):
    """A budget that cannot be set; nothing was written."""


def _problem(
    monthly_cap_micros: int,
    hourly_cap_micros: int | None,
    thresholds: Sequence[int],
    on_exceed: str,
    fallback_models: Sequence[str],
) -> str | None:
    if type(monthly_cap_micros) is not int or monthly_cap_micros <= 0:
        return "the monthly cap must be a positive amount"
    if hourly_cap_micros is not None and (type(hourly_cap_micros) is not int or hourly_cap_micros <= 0):
        return "the hourly cap must be a positive amount (or none)"
    if not thresholds or any(type(t) is not int or not 1 <= t <= 100 for t in thresholds):
        return "thresholds are whole percents from 1 to 100"
    if len(set(thresholds)) != len(thresholds):
        return "thresholds must not repeat"
    if on_exceed not in OnExceed.values:
        return f"on_exceed is one of {', '.join(OnExceed.values)}"
    if on_exceed == OnExceed.FALLBACK and not fallback_models:
        return "a fallback budget needs at least one fallback model"
    for model in fallback_models:
        try:
            prices.price_in_force(model)
        except prices.NoPriceInForce as error:
            return f"fallback model {model!r}: {error}"
    return None


def check_budget(
    *,
    monthly_cap_micros: int,
    hourly_cap_micros: int | None = None,
    thresholds: Sequence[int] = (50, 80, 100),
    on_exceed: str = OnExceed.BLOCK,
    fallback_models: Sequence[str] = (),
) -> str | None:
    """What set_budget would refuse in these settings, or None. A form (the admin's) shows it
    on the page before anything is written; set_budget checks again, the same way."""
    return _problem(monthly_cap_micros, hourly_cap_micros, thresholds, on_exceed, fallback_models)


def set_budget(
    *,
    tenant_id: uuid.UUID,
    monthly_cap_micros: int,
    hourly_cap_micros: int | None = None,
    thresholds: Sequence[int] = (50, 80, 100),
    on_exceed: str = OnExceed.BLOCK,
    fallback_models: Sequence[str] = (),
) -> Budget:
    """Create or replace the tenant's budget. Raises InvalidBudget, writing nothing."""
    if problem := _problem(monthly_cap_micros, hourly_cap_micros, thresholds, on_exceed, fallback_models):
        raise InvalidBudget(f"Invalid budget: {problem}; nothing was written.")
    with tenant_context(tenant_id):
        budget, _ = Budget.objects.update_or_create(
            tenant_id=tenant_id,
            defaults={
                "monthly_cap_micros": monthly_cap_micros,
                "hourly_cap_micros": hourly_cap_micros,
                "thresholds": sorted(thresholds),
                "on_exceed": on_exceed,
                "fallback_models": list(fallback_models),
                "updated_at": Now(),
            },
        )
        budget.refresh_from_db(fields=["updated_at"])
        Tenant.objects.filter(id=tenant_id).update(budgeted=True)
        # The periods in progress take the new caps at once.
        BudgetState.objects.filter(
            period=BudgetPeriod.MONTH, period_start=month_start(budget.updated_at)
        ).update(cap_micros=monthly_cap_micros)
        if hourly_cap_micros is not None:
            BudgetState.objects.filter(
                period=BudgetPeriod.HOUR, period_start=hour_start(budget.updated_at)
            ).update(cap_micros=hourly_cap_micros)
        # A state kept from an earlier budget missed what was spent while there was none:
        # brought back to the calls it counts before the new budget admits anything.
        repair_budget_states(tenant_id=tenant_id)
    return budget


def remove_budget(*, tenant_id: uuid.UUID) -> bool:
    """The tenant is unlimited again; False if it had no budget. Its history stays."""
    with tenant_context(tenant_id):
        deleted, _ = Budget.objects.all().delete()
        Tenant.objects.filter(id=tenant_id).update(budgeted=False)
    return bool(deleted)
