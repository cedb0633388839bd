"""Budgets: admitting a call against its tenant's caps before it runs.

1. `admit_call`, in a transaction of its own that commits before the provider is called (or
   in the API request's), reserves the call's worst-case cost on the month's state (and the
   hour's, with an hourly cap) by one conditional statement per period: admitted only if
   spent + reserved + estimate <= cap. At the cap it falls back along the budget's model
   chain (`fallback`) or blocks (`block`): BudgetExceeded, after the BLOCK decision commits.
   Every admission writes a decision row; a redelivered or retried call finds its own
   reservation by (tenant, request_id, endpoint) and reserves nothing again.
2. Settlement (llm/services/settlement.py) turns the reservation into the call's actual cost,
   or gives it back when the call fails.

A tenant with no budget is unlimited: nothing is reserved or decided for its calls.
"""

import datetime
import logging
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction
from django.db.models.functions import Now

from llm import prices, sql
from llm.models import (
    Budget,
    BudgetDecision,
    BudgetPeriod,
    BudgetReservation,
    Decision,
    OnExceed,
    ReservationStatus,
)
from llm.money import format_micros
from llm.payloads import InvalidPayload
from llm.stub_provider import LLMUsage
from skeldir.tenancy import tenant_context

logger = logging.getLogger(__name__)

BUDGET_NAMES = {BudgetPeriod.MONTH: "monthly", BudgetPeriod.HOUR: "hourly"}


class BudgetExceeded(InvalidPayload):
    """The call would take a budget past its cap; nothing but the BLOCK decision was written.
    Not retried: it cannot succeed before `resets_at`. (Rebuilt from its message alone when a
    result backend carries it: the details are then in the message.)"""

    def __init__(
        self,
        message: str | None = None,
        *,
        budget: str = "monthly",
        cap_micros: int = 0,
        remaining_micros: int = 0,
        resets_at: datetime.datetime | None = None,
    ):
        self.budget, self.cap_micros = budget, cap_micros
        self.remaining_micros, self.resets_at = remaining_micros, resets_at
        super().__init__(
            message
            or f"The {budget} LLM budget would be exceeded: {format_micros(remaining_micros)} of "
            f"{format_micros(cap_micros)} left; it resets at {resets_at.isoformat()}. Nothing was recorded."
        )


def month_start(at: datetime.datetime) -> datetime.datetime:
    at = at.astimezone(datetime.UTC)
    return at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def hour_start(at: datetime.datetime) -> datetime.datetime:
    return at.astimezone(datetime.UTC).replace(minute=0, second=0, microsecond=0)


def period_end(period: str, start: datetime.datetime) -> datetime.datetime:
    if period == BudgetPeriod.HOUR:
        return start + datetime.timedelta(hours=1)
    return (start + datetime.timedelta(days=32)).replace(day=1)


@dataclass(frozen=True)
class Admission:
    """A call admitted under its tenant's budget, with the model it may use."""

    model: str
    month_start: datetime.datetime
    thresholds: tuple[int, ...]


@dataclass(frozen=True)
class _Period:
    period: str
    start: datetime.datetime
    cap: int


class _Blocked(Exception):
    def __init__(self, period: _Period, remaining: int):
        self.period, self.remaining = period, remaining


def estimate_micros(*, model: str, usage: LLMUsage) -> int:
    """The call's worst case: every input token uncached, the most output it may produce."""
    return prices.call_cost_micros(
        price=prices.price_in_force(model),
        input_tokens=usage.input_tokens,
        cached_input_tokens=0,
        output_tokens=usage.output_tokens,
    )


def _reserve_period(cursor, *, tenant_id: uuid.UUID, period: _Period, estimate: int) -> None:
    params = {
        "tenant_id": tenant_id,
        "period": period.period,
        "period_start": period.start,
        "estimate": estimate,
    }
    cursor.execute(sql.RESERVE_BUDGET_SQL, params)
    if cursor.fetchone() is not None:
        return
    cursor.execute(sql.BUDGET_REMAINING_SQL, params)
    row = cursor.fetchone()
    if row is None or row[0] >= estimate:
        # The period's first call: create its state, then try again. Or a concurrent first
        # call created the state between the two statements above (each sees what had
        # committed when it began), and it has room: try again too, rather than block.
        if row is None:
            cursor.execute(
                sql.CREATE_BUDGET_STATE_SQL,
                {**params, "cap": period.cap, "period_end": period_end(period.period, period.start)},
            )
        cursor.execute(sql.RESERVE_BUDGET_SQL, params)
        if cursor.fetchone() is not None:
            return
        cursor.execute(sql.BUDGET_REMAINING_SQL, params)
        row = cursor.fetchone()
    raise _Blocked(period, max(0, row[0]))


def _try_reserve(*, tenant_id: uuid.UUID, periods: list[_Period], estimate: int) -> None:
    """Reserve on every period or on none (a savepoint), month before hour (one lock order)."""
    with transaction.atomic(), connection.cursor() as cursor:
        for period in periods:
            _reserve_period(cursor, tenant_id=tenant_id, period=period, estimate=estimate)


def admit_call(*, tenant_id: uuid.UUID, request_id: str, endpoint: str, usage: LLMUsage) -> Admission | None:
    """Admit the call under the tenant's budget (None: the tenant has none). Runs in its own
    transaction inside the tenant, nested in the caller's if there is one; see the module
    docstring. Raises BudgetExceeded when neither the model nor a fallback fits."""
    blocked: BudgetExceeded | None = None
    with tenant_context(tenant_id):
        budget = Budget.objects.annotate(now=Now()).first()
        if budget is None:
            return None
        existing = (
            BudgetReservation.objects.filter(request_id=request_id, endpoint=endpoint)
            .exclude(status=ReservationStatus.RELEASED)
            .values_list("model", "month_start")
            .first()
        )
        thresholds = tuple(sorted(budget.thresholds))
        if existing is not None:  # a redelivery or retry: its own reservation, extended
            BudgetReservation.objects.filter(request_id=request_id, endpoint=endpoint).update(
                lease_expires_at=Now() + datetime.timedelta(seconds=settings.LLM_RESERVATION_LEASE_SECONDS)
            )
            return Admission(model=existing[0], month_start=existing[1], thresholds=thresholds)
        periods = [_Period(BudgetPeriod.MONTH, month_start(budget.now), budget.monthly_cap_micros)]
        if budget.hourly_cap_micros is not None:
            periods.append(_Period(BudgetPeriod.HOUR, hour_start(budget.now), budget.hourly_cap_micros))
        candidates = [usage.model]
        if budget.on_exceed == OnExceed.FALLBACK:
            candidates += [m for m in budget.fallback_models if m != usage.model]
        requested_estimate = estimate_micros(model=usage.model, usage=usage)  # unknown model: raises
        first_block: _Blocked | None = None
        for candidate in candidates:
            try:
                estimate = estimate_micros(model=candidate, usage=usage)
                _try_reserve(tenant_id=tenant_id, periods=periods, estimate=estimate)
            except prices.NoPriceInForce:
                continue  # a fallback without a price is skipped, never free
            except _Blocked as block:
                first_block = first_block or block
                continue
            fallback = candidate != usage.model
            _record(
                tenant_id=tenant_id,
                request_id=request_id,
                endpoint=endpoint,
                requested=usage.model,
                resolved=candidate,
                estimate=estimate,
                decision=Decision.FALLBACK if fallback else Decision.ALLOW,
                reason=(
                    f"{usage.model} would exceed the {BUDGET_NAMES[first_block.period.period]} budget; "
                    f"{candidate} fits"
                    if fallback
                    else "within budget"
                ),
                periods=periods,
                budget_period=first_block.period if fallback else periods[0],
                remaining=first_block.remaining if fallback else None,
            )
            BudgetReservation.objects.update_or_create(
                request_id=request_id,
                endpoint=endpoint,
                defaults={
                    "tenant_id": tenant_id,
                    "model": candidate,
                    "estimate_micros": estimate,
                    "actual_micros": None,
                    "month_start": periods[0].start,
                    "hour_start": periods[1].start if len(periods) > 1 else None,
                    "status": ReservationStatus.RESERVED,
                    "lease_expires_at": Now()
                    + datetime.timedelta(seconds=settings.LLM_RESERVATION_LEASE_SECONDS),
                    "finished_at": None,
                },
            )
            return Admission(model=candidate, month_start=periods[0].start, thresholds=thresholds)
        assert first_block is not None
        _record(
            tenant_id=tenant_id,
            request_id=request_id,
            endpoint=endpoint,
            requested=usage.model,
            resolved=None,
            estimate=requested_estimate,
            decision=Decision.BLOCK,
            reason=f"would exceed the {BUDGET_NAMES[first_block.period.period]} budget"
            + (" (and every fallback)" if len(candidates) > 1 else ""),
            periods=periods,
            budget_period=first_block.period,
            remaining=first_block.remaining,
        )
        blocked = BudgetExceeded(
            budget=BUDGET_NAMES[first_block.period.period],
            cap_micros=first_block.period.cap,
            remaining_micros=first_block.remaining,
            resets_at=period_end(first_block.period.period, first_block.period.start),
        )
    raise blocked  # after the BLOCK decision has committed with the tenant context's block


def _record(
    *,
    tenant_id,
    request_id,
    endpoint,
    requested,
    resolved,
    estimate,
    decision,
    reason,
    periods,
    budget_period: _Period,
    remaining: int | None,
) -> None:
    if remaining is None:  # admitted: what the deciding period had left before this call
        with connection.cursor() as cursor:
            cursor.execute(
                sql.BUDGET_REMAINING_SQL,
                {"tenant_id": tenant_id, "period": budget_period.period, "period_start": budget_period.start},
            )
            remaining = cursor.fetchone()[0] + estimate
    BudgetDecision.objects.create(
        tenant_id=tenant_id,
        request_id=request_id,
        endpoint=endpoint,
        requested_model=requested,
        resolved_model=resolved,
        estimate_micros=estimate,
        budget=budget_period.period,
        cap_micros=budget_period.cap,
        remaining_micros=remaining,
        decision=decision,
        reason=reason,
    )
