"""Reads. Tenant-scoped queries rely on the tenant in force (see `skeldir.tenancy`):
row-level security filters them, so they carry no tenant filter of their own."""

import datetime
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from django.db import connection

from llm.api_keys import hash_api_key
from llm.models import LLMMonthlyCost, Tenant


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
