"""Budgets: admitting a call against its tenant's caps before it runs.

1. `admit_call`, in a transaction of its own that commits before the provider is called (or
   in the API request's), reserves the call's worst-case cost on the month's state (and the
   hour's, with an hourly cap) by one conditional statement per period: admitted only if
   spent + reserved + estimate <= cap. At the cap it falls back along the budget's model
   chain (`fallback`) or blocks (`block`): BudgetExceeded, after the BLOCK decision commits.
   Every admission writes a decision row; a redelivered or retried call finds its own
   reservation by (tenant, request_id, endpoint) and reserves nothing again. The common case
   (a monthly budget with room, its month under way, a call seen first) is one statement
   (`sql.ADMISSION_SQL`): the reservation, the decision and the reservation row at once.
2. Settlement (llm/services/settlement.py) turns the reservation into the call's actual cost,
   or gives it back when the call fails.

A tenant with no budget is unlimited: nothing is reserved or decided for its calls.
"""

import datetime
import logging
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.db.models.functions import Now

from llm import prices, sql
from llm.models import (
    BudgetDecision,
    BudgetPeriod,
    BudgetReservation,
    Decision,
    OnExceed,
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


def estimate_micros(*, model: str, usage: LLMUsage, at: datetime.datetime) -> int:
    """The call's worst case: every input token uncached, the most output it may produce, at
    the dearest price the model has from `at` (the database's time: the clock the call will
    be recorded by) until the reservation's lease runs out (a price change scheduled
    meanwhile would price the call when it is recorded)."""
    until = at + datetime.timedelta(seconds=settings.LLM_RESERVATION_LEASE_SECONDS)
    return max(
        prices.call_cost_micros(
            price=price,
            input_tokens=usage.input_tokens,
            cached_input_tokens=0,
            output_tokens=usage.output_tokens,
        )
        for price in prices.prices_in_force_between(model, start=at, end=until)
    )


def _reserve_period(cursor, *, tenant_id: uuid.UUID, period: _Period, estimate: int) -> int:
    """Reserve `estimate` on one period; returns what the period had left before it, or
    raises _Blocked."""
    params = {
        "tenant_id": tenant_id,
        "period": period.period,
        "period_start": period.start,
        "estimate": estimate,
    }
    cursor.execute(sql.RESERVE_BUDGET_SQL, params)
    if (row := cursor.fetchone()) is not None:
        return row[1]
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
        if (row := cursor.fetchone()) is not None:
            return row[1]
        cursor.execute(sql.BUDGET_REMAINING_SQL, params)
        row = cursor.fetchone()
    raise _Blocked(period, max(0, row[0]))


def _try_reserve(cursor, *, tenant_id: uuid.UUID, periods: list[_Period], estimate: int) -> int:
    """Reserve on every period or on none, month before hour (one lock order for everyone);
    returns what the month had left before. With an hourly cap a savepoint takes the month's
    reservation back when the hour's does not fit."""
    if len(periods) == 1:
        return _reserve_period(cursor, tenant_id=tenant_id, period=periods[0], estimate=estimate)
    with transaction.atomic():
        remaining = [
            _reserve_period(cursor, tenant_id=tenant_id, period=p, estimate=estimate) for p in periods
        ]
    return remaining[0]


class ReservationMismatch(InvalidPayload):
    """A request_id reused for a call dearer than the one it was admitted for."""


class ConcurrentAdmission(OperationalError):
    """Two deliveries of one call were admitted at once: this one rolls back (its
    reservation with it) and is retried, and then finds the other's reservation."""


def _reason(requested: str, resolved: str | None, block: _Blocked | None, fallbacks: bool) -> str:
    if block is None:
        return "within budget"
    budget = BUDGET_NAMES[block.period.period]
    if resolved is None:
        return f"would exceed the {budget} budget" + (" (and every fallback)" if fallbacks else "")
    return f"{requested} would exceed the {budget} budget; {resolved} fits"


def admit_call(*, tenant_id: uuid.UUID, request_id: str, endpoint: str, usage: LLMUsage) -> Admission | None:
    """Admit the call under the tenant's budget (None: the tenant has none). Runs in its own
    transaction inside the tenant, nested in the caller's if there is one; see the module
    docstring. Raises BudgetExceeded when neither the model nor a fallback fits."""
    with connection.cursor() as cursor:  # one read, before entering the tenant: most tenants have none
        cursor.execute(sql.TENANT_HAS_BUDGET_SQL, [tenant_id])
        row = cursor.fetchone()
    if row is None:
        return None
    # Every estimate is priced at the database's time of this read (the clock calls are
    # recorded by), and the reservation keeps that time: a redelivery reprices at exactly it.
    (priced_at,) = row
    # The common case is admitted by the first statement inside the tenant.
    fast_estimate = estimate_micros(model=usage.model, usage=usage, at=priced_at)  # unknown model: raises
    with tenant_context(tenant_id), connection.cursor() as cursor:
        cursor.execute(
            sql.ADMISSION_SQL,
            {
                "tenant_id": tenant_id,
                "request_id": request_id,
                "endpoint": endpoint,
                "model": usage.model,
                "estimate": fast_estimate,
                "reason": _reason(usage.model, usage.model, None, fallbacks=False),
                "estimated_at": priced_at,
                "lease": settings.LLM_RESERVATION_LEASE_SECONDS,
            },
        )
        row = cursor.fetchone()
        if row is None:  # the budget was removed since
            return None
        (
            monthly_cap,
            hourly_cap,
            thresholds,
            on_exceed,
            fallback_models,
            now,
            reserved_model,
            reserved_month,
            reserved_estimate,
            reserved_at,
            admitted,
            reservation_written,
        ) = row
        thresholds = tuple(sorted(thresholds))
        if admitted:
            if not reservation_written:
                raise ConcurrentAdmission(
                    f"call {request_id} ({endpoint}) is being admitted by another delivery"
                )
            return Admission(model=usage.model, month_start=month_start(now), thresholds=thresholds)
        if reserved_model is not None:  # a redelivery or retry: its own reservation, extended
            if estimate_micros(model=reserved_model, usage=usage, at=reserved_at) > reserved_estimate:
                # The same request_id for a bigger call: it would settle beyond what was admitted.
                raise ReservationMismatch(
                    f"request_id {request_id!r} was admitted for a smaller {endpoint} call; a different "
                    "request needs its own request_id (Idempotency-Key). Nothing was recorded.",
                    fields={"request_id": "already used for a different, smaller request"},
                )
            BudgetReservation.objects.filter(request_id=request_id, endpoint=endpoint).update(
                lease_expires_at=Now() + datetime.timedelta(seconds=settings.LLM_RESERVATION_LEASE_SECONDS)
            )
            return Admission(model=reserved_model, month_start=reserved_month, thresholds=thresholds)
        periods = [_Period(BudgetPeriod.MONTH, month_start(now), monthly_cap)]
        if hourly_cap is not None:
            periods.append(_Period(BudgetPeriod.HOUR, hour_start(now), hourly_cap))
        candidates = [usage.model]
        if on_exceed == OnExceed.FALLBACK:
            candidates += [m for m in fallback_models if m != usage.model]
        requested_estimate = fast_estimate
        block: _Blocked | None = None
        for candidate in candidates:
            try:
                estimate = estimate_micros(model=candidate, usage=usage, at=priced_at)
                remaining = _try_reserve(cursor, tenant_id=tenant_id, periods=periods, estimate=estimate)
            except prices.NoPriceInForce:
                continue  # a fallback without a price is skipped, never free
            except _Blocked as blocked:
                block = block or blocked
                continue
            deciding = block.period if block else periods[0]
            cursor.execute(
                sql.ADMIT_SQL,
                {
                    "tenant_id": tenant_id,
                    "request_id": request_id,
                    "endpoint": endpoint,
                    "requested": usage.model,
                    "resolved": candidate,
                    "estimate": estimate,
                    "budget": deciding.period,
                    "cap": deciding.cap,
                    "remaining": block.remaining if block else remaining,
                    "decision": Decision.FALLBACK if block else Decision.ALLOW,
                    "reason": _reason(usage.model, candidate, block, fallbacks=True),
                    "month_start": periods[0].start,
                    "hour_start": periods[1].start if len(periods) > 1 else None,
                    "estimated_at": priced_at,
                    "lease": settings.LLM_RESERVATION_LEASE_SECONDS,
                },
            )
            if cursor.fetchone() is None:
                raise ConcurrentAdmission(
                    f"call {request_id} ({endpoint}) is being admitted by another delivery"
                )
            return Admission(model=candidate, month_start=periods[0].start, thresholds=thresholds)
        assert block is not None
        BudgetDecision.objects.create(
            tenant_id=tenant_id,
            request_id=request_id,
            endpoint=endpoint,
            requested_model=usage.model,
            estimate_micros=requested_estimate,
            budget=block.period.period,
            cap_micros=block.period.cap,
            remaining_micros=block.remaining,
            decision=Decision.BLOCK,
            reason=_reason(usage.model, None, block, fallbacks=len(candidates) > 1),
        )
    # Raised after the tenant context's block has committed the BLOCK decision.
    raise BudgetExceeded(
        budget=BUDGET_NAMES[block.period.period],
        cap_micros=block.period.cap,
        remaining_micros=block.remaining,
        resets_at=period_end(block.period.period, block.period.start),
    )
