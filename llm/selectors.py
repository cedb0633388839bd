"""Reads. Tenant-scoped queries rely on the tenant in force (see `skeldir.tenancy`):
row-level security filters them, so they carry no tenant filter of their own."""

import base64
import datetime
import json
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from django.db import connection
from django.db.models import Count, Q, Sum
from django.db.models.functions import Now, TruncDay

from llm import sql
from llm.api_keys import hash_api_key
from llm.models import Budget, BudgetAlert, BudgetState, LLMApiCall, LLMMonthlyCost, Tenant


def get_tenant_by_api_key(*, api_key: str) -> Tenant | None:
    return Tenant.objects.filter(api_key_hash=hash_api_key(api_key)).first()


def current_utc_month() -> datetime.date:
    """The first day of the current UTC month by the database clock."""
    with connection.cursor() as cursor:
        cursor.execute(sql.CURRENT_UTC_MONTH_SQL)
        return cursor.fetchone()[0]


def get_monthly_cost(*, month: datetime.date) -> LLMMonthlyCost | None:
    return LLMMonthlyCost.objects.filter(month=month).first()


@dataclass(frozen=True)
class MonthlyCostDrift:
    """A month whose cost row disagrees with the sum of its call rows (calls and µUSD;
    breakdowns are {model: {"calls": n, "cost_micros": m}})."""

    month: datetime.date
    recorded_calls: int
    recorded_cost_micros: int
    recorded_breakdown: dict
    actual_calls: int
    actual_cost_micros: int
    actual_breakdown: dict


def find_monthly_cost_drift() -> list[MonthlyCostDrift]:
    """Months of the tenant in force whose `llm_monthly_costs` row differs from its calls."""
    with connection.cursor() as cursor:
        cursor.execute(sql.MONTHLY_COST_DRIFT_SQL)
        rows = cursor.fetchall()
    # Django's psycopg setup hands jsonb back as text; JSONField decodes it, raw SQL must.
    return [
        MonthlyCostDrift(
            month, calls, cost, json.loads(breakdown), actual_calls, actual_cost, json.loads(actual)
        )
        for month, calls, cost, breakdown, actual_calls, actual_cost, actual in rows
    ]


@dataclass(frozen=True)
class CallTotals:
    calls: int
    cost_micros: int


# Request ids per query: well under PostgreSQL's 65,535 bind parameters per statement.
_REQUEST_ID_CHUNK = 5_000


def call_totals_by_endpoint(*, request_ids: Iterable[str]) -> dict[str, CallTotals]:
    """The tenant's recorded calls among `request_ids`, counted and costed per endpoint (what
    a caller that knows the request ids it sent, such as run_llm_stub, reports)."""
    ids = sorted(set(request_ids))
    totals: dict[str, CallTotals] = {}
    for start in range(0, len(ids), _REQUEST_ID_CHUNK):
        rows = (
            LLMApiCall.objects.filter(request_id__in=ids[start : start + _REQUEST_ID_CHUNK])
            .values("endpoint")
            .annotate(calls=Count("id"), cost_micros=Sum("cost_micros"))
            .order_by()
        )
        for row in rows:
            before = totals.get(row["endpoint"], CallTotals(0, 0))
            totals[row["endpoint"]] = CallTotals(
                before.calls + row["calls"], before.cost_micros + row["cost_micros"]
            )
    return totals


@dataclass(frozen=True)
class BudgetDrift:
    """A budget period whose state disagrees with its calls (spent) or its open reservations
    (reserved)."""

    period: str
    period_start: datetime.datetime
    recorded_spent_micros: int
    recorded_reserved_micros: int
    actual_spent_micros: int
    actual_reserved_micros: int


def find_budget_drift() -> list[BudgetDrift]:
    """Budget periods of the tenant in force whose state differs from what it counts."""
    with connection.cursor() as cursor:
        cursor.execute(sql.BUDGET_DRIFT_SQL)
        return [BudgetDrift(*row) for row in cursor.fetchall()]


def iter_tenant_ids() -> Iterator[uuid.UUID]:
    """Every tenant in the directory, for jobs that visit each tenant in turn."""
    return Tenant.objects.order_by("id").values_list("id", flat=True).iterator(chunk_size=500)


class InvalidCursor(ValueError):
    pass


@dataclass(frozen=True)
class CallPage:
    items: list[LLMApiCall]
    next_cursor: str | None


def _encode_cursor(call: LLMApiCall) -> str:
    return base64.urlsafe_b64encode(f"{call.created_at.isoformat()}|{call.id}".encode()).decode()


def _decode_cursor(cursor: str) -> tuple[datetime.datetime, uuid.UUID]:
    try:
        created_at, call_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        position = datetime.datetime.fromisoformat(created_at), uuid.UUID(call_id)
        if position[0].tzinfo is None:  # the API's cursors carry the offset; a naive time is forged
            raise ValueError(created_at)
        return position
    except (ValueError, UnicodeError):
        raise InvalidCursor("not a cursor this API returned") from None


def list_api_calls(*, since: datetime.datetime | None, limit: int, cursor: str | None) -> CallPage:
    """The tenant's calls, newest first, one keyset page at a time (the cursor is the last
    call's (created_at, id), so pages stay stable while new calls arrive)."""
    calls = LLMApiCall.objects.order_by("-created_at", "-id")
    if since is not None:
        calls = calls.filter(created_at__gte=since if since.tzinfo else since.replace(tzinfo=datetime.UTC))
    if cursor:
        created_at, call_id = _decode_cursor(cursor)
        calls = calls.filter(Q(created_at__lt=created_at) | Q(created_at=created_at, id__lt=call_id))
    rows = list(calls[: limit + 1])
    return CallPage(
        items=rows[:limit], next_cursor=_encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    )


@dataclass(frozen=True)
class PeriodStatus:
    period: str  # "monthly" | "hourly"
    cap_micros: int
    spent_micros: int
    reserved_micros: int
    resets_at: datetime.datetime

    @property
    def remaining_micros(self) -> int:
        return max(0, self.cap_micros - self.spent_micros - self.reserved_micros)


@dataclass(frozen=True)
class BudgetStatus:
    monthly: PeriodStatus
    hourly: PeriodStatus | None
    thresholds: list[int]
    thresholds_crossed: list[int]
    on_exceed: str


def budget_status() -> BudgetStatus | None:
    """The budget of the tenant in force and where its current month (and hour) stand; None
    without a budget. A period no call has reserved in yet shows what its calls spent."""
    budget = Budget.objects.annotate(now=Now()).first()
    if budget is None:
        return None
    now = budget.now.astimezone(datetime.UTC)
    month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    hour = now.replace(minute=0, second=0, microsecond=0)
    states = {
        (s.period, s.period_start): s
        for s in BudgetState.objects.filter(
            Q(period="month", period_start=month) | Q(period="hour", period_start=hour)
        )
    }

    def period(kind: str, start: datetime.datetime, end: datetime.datetime, cap: int) -> PeriodStatus:
        state = states.get((kind, start))
        if state is not None:
            spent, reserved = state.spent_micros, state.reserved_micros
        else:
            spent = (
                LLMApiCall.objects.filter(created_at__gte=start, created_at__lt=end).aggregate(
                    total=Sum("cost_micros")
                )["total"]
                or 0
            )
            reserved = 0
        name = "monthly" if kind == "month" else "hourly"
        return PeriodStatus(name, cap, spent, reserved, end)

    next_month = (month + datetime.timedelta(days=32)).replace(day=1)
    crossed = BudgetAlert.objects.filter(month_start=month).order_by("threshold_percent")
    return BudgetStatus(
        monthly=period("month", month, next_month, budget.monthly_cap_micros),
        hourly=None
        if budget.hourly_cap_micros is None
        else period("hour", hour, hour + datetime.timedelta(hours=1), budget.hourly_cap_micros),
        thresholds=sorted(budget.thresholds),
        thresholds_crossed=list(crossed.values_list("threshold_percent", flat=True)),
        on_exceed=budget.on_exceed,
    )


def daily_spend_by_model(*, month_start: datetime.date) -> dict[datetime.date, dict[str, int]]:
    """What the tenant in force spent (µUSD, from its calls) on each UTC day of the month that
    starts at `month_start`, per model: {day: {model: micros}}, days in order, days without
    calls left out. The admin's daily spend chart."""
    start = datetime.datetime(month_start.year, month_start.month, 1, tzinfo=datetime.UTC)
    end = (start + datetime.timedelta(days=32)).replace(day=1)
    rows = (
        LLMApiCall.objects.filter(created_at__gte=start, created_at__lt=end)
        # Days in UTC whatever the connection's time zone, like the months of the accounts.
        .annotate(day=TruncDay("created_at", tzinfo=datetime.UTC))
        .values("day", "model")
        .annotate(cost_micros=Sum("cost_micros"))
        .order_by("day", "model")
    )
    spend: dict[datetime.date, dict[str, int]] = {}
    for row in rows:
        spend.setdefault(row["day"].date(), {})[row["model"]] = row["cost_micros"]
    return spend
