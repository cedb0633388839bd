"""Reads. Tenant-scoped queries rely on the tenant in force (see `skeldir.tenancy`):
row-level security filters them, so they carry no tenant filter of their own."""

import base64
import datetime
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from django.db import connection
from django.db.models import Q

from llm.api_keys import hash_api_key
from llm.models import LLMApiCall, LLMMonthlyCost, Tenant


def get_tenant_by_api_key(*, api_key: str) -> Tenant | None:
    return Tenant.objects.filter(api_key_hash=hash_api_key(api_key)).first()


def current_utc_month() -> datetime.date:
    """The first day of the current UTC month by the database clock."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT date_trunc('month', now() AT TIME ZONE 'UTC')::date")
        return cursor.fetchone()[0]


def get_monthly_cost(*, month: datetime.date) -> LLMMonthlyCost | None:
    return LLMMonthlyCost.objects.filter(month=month).first()


@dataclass(frozen=True)
class MonthlyCostDrift:
    """A month whose cost row disagrees with the sum of its call rows."""

    month: datetime.date
    recorded_calls: int
    recorded_cost_cents: int
    recorded_breakdown: dict
    actual_calls: int
    actual_cost_cents: int
    actual_breakdown: dict


def find_monthly_cost_drift() -> list[MonthlyCostDrift]:
    """Months of the tenant in force whose `llm_monthly_costs` row differs from its calls.

    One statement, so both sides come from one snapshot: a call committed meanwhile is either
    in both (call row and increment) or in neither. Raw SQL: a FULL JOIN of an aggregate with
    a jsonb breakdown built per model has no ORM spelling.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            """
            WITH per_model AS (
                SELECT date_trunc('month', created_at AT TIME ZONE 'UTC')::date AS month, model,
                       count(*) AS calls, sum(cost_cents) AS cost_cents
                  FROM llm_api_calls
                 GROUP BY 1, 2
            ), actual AS (
                SELECT month, sum(calls)::bigint AS calls, sum(cost_cents)::bigint AS cost_cents,
                       jsonb_object_agg(model, jsonb_build_object('calls', calls, 'cost_cents', cost_cents))
                           AS breakdown
                  FROM per_model
                 GROUP BY month
            )
            SELECT coalesce(a.month, m.month),
                   coalesce(m.total_calls, 0), coalesce(m.total_cost_cents, 0),
                   coalesce(m.model_breakdown, '{}'::jsonb),
                   coalesce(a.calls, 0), coalesce(a.cost_cents, 0), coalesce(a.breakdown, '{}'::jsonb)
              FROM actual a
              FULL JOIN llm_monthly_costs m ON m.month = a.month
             WHERE coalesce(m.total_calls, 0) <> coalesce(a.calls, 0)
                OR coalesce(m.total_cost_cents, 0) <> coalesce(a.cost_cents, 0)
                OR coalesce(m.model_breakdown, '{}'::jsonb) <> coalesce(a.breakdown, '{}'::jsonb)
             ORDER BY 1
            """
        )
        rows = cursor.fetchall()
    # Django's psycopg setup hands jsonb back as text; JSONField decodes it, raw SQL must.
    return [
        MonthlyCostDrift(
            month, calls, cost, json.loads(breakdown), actual_calls, actual_cost, json.loads(actual)
        )
        for month, calls, cost, breakdown, actual_calls, actual_cost, actual in rows
    ]


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
