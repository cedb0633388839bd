"""Call accounting: one LLM call row, priced, and its cost added to the tenant's month.

Both happen in the caller's transaction inside the tenant (`call_transaction`), so either
both commit or neither does, and a call already recorded under the same (tenant, request_id,
endpoint) adds nothing: a retried or redelivered task is counted once.
"""

import datetime
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from django.db import IntegrityError, connection
from psycopg.types.json import Jsonb

from llm import sql
from llm.models import LLMApiCall
from llm.money import micros_to_cents
from llm.prices import NoPriceInForce
from llm.services.errors import UnknownTenant
from llm.stub_provider import LLMUsage
from skeldir.tenancy import tenant_context

FOREIGN_KEY_VIOLATION = "23503"


@contextmanager
def call_transaction(tenant_id: uuid.UUID) -> Iterator[None]:
    """One unit of work's transaction inside `tenant_id`.

    The tenant foreign keys are deferred, so a tenant that does not exist (or was deleted
    meanwhile) surfaces at commit; it becomes UnknownTenant, and nothing was recorded.
    """
    try:
        with tenant_context(tenant_id):
            yield
    except IntegrityError as error:
        if getattr(error.__cause__, "sqlstate", None) == FOREIGN_KEY_VIOLATION:
            raise UnknownTenant(f"Unknown tenant {tenant_id}; nothing was recorded.") from None
        raise


def utc_month(at: datetime.datetime) -> datetime.date:
    """First day of the UTC month of `at`: the key of a call's monthly cost row."""
    return at.astimezone(datetime.UTC).date().replace(day=1)


@dataclass(frozen=True)
class RecordedCall:
    id: uuid.UUID
    created: bool  # False: recorded before (a retry or redelivery), nothing written now
    created_at: datetime.datetime
    cost_micros: int  # computed at recording, from the price in force at created_at
    price_id: uuid.UUID | None

    @property
    def month(self) -> datetime.date:
        return utc_month(self.created_at)

    @property
    def cost_cents(self) -> int:
        return micros_to_cents(self.cost_micros)


def record_api_call(
    *,
    tenant_id: uuid.UUID,
    endpoint: str,
    request_id: str,
    usage: LLMUsage,
    correlation_id: str | None = None,
    was_cached: bool = False,
    request_metadata: dict | None = None,
) -> RecordedCall:
    """Insert one call row, priced at its own time, unless (tenant, request_id, endpoint) is
    already recorded. Runs inside `tenant_context(tenant_id)`. A model with no price in
    force raises NoPriceInForce (and the caller's transaction writes nothing)."""
    with connection.cursor() as cursor:
        cursor.execute(
            sql.INSERT_API_CALL_SQL,
            {
                "tenant_id": tenant_id,
                "endpoint": endpoint,
                "model": usage.model,
                "input_tokens": usage.input_tokens,
                "cached_input_tokens": usage.cached_input_tokens,
                "output_tokens": usage.output_tokens,
                "latency_ms": usage.latency_ms,
                "was_cached": was_cached,
                "request_id": request_id,
                "correlation_id": correlation_id,
                "request_metadata": None if request_metadata is None else Jsonb(request_metadata),
            },
        )
        row = cursor.fetchone()
    if row is not None:
        return RecordedCall(id=row[0], created=True, created_at=row[1], cost_micros=row[2], price_id=row[3])
    existing = (
        LLMApiCall.objects.filter(tenant_id=tenant_id, request_id=request_id, endpoint=endpoint)
        .values_list("id", "created_at", "cost_micros", "price_id")
        .first()
    )
    if existing is None:  # nothing conflicted: the model had no price to insert with
        raise NoPriceInForce(
            f"Model {usage.model!r} has no price in force (unknown, or outside its periods); "
            "nothing was recorded."
        )
    return RecordedCall(existing[0], False, *existing[1:])


@dataclass(frozen=True)
class ModelTotals:
    calls: int
    cost_micros: int


def record_monthly_costs(
    *, tenant_id: uuid.UUID, month: datetime.date, model_label: str, cost_micros: int, calls: int
) -> None:
    """Add `calls` and `cost_micros` to the tenant's month, totals and `model_label`'s entry."""
    add_to_monthly_costs(
        tenant_id=tenant_id, month=month, breakdown={model_label: ModelTotals(calls, cost_micros)}
    )


def _breakdown_json(breakdown: Mapping[str, ModelTotals]) -> Jsonb:
    return Jsonb(
        {
            model: {
                "calls": t.calls,
                "cost_micros": t.cost_micros,
                "cost_cents": micros_to_cents(t.cost_micros),
            }
            for model, t in breakdown.items()
        }
    )


def _check_month(month: datetime.date) -> None:
    if month.day != 1:
        raise ValueError(f"month must be the first day of a month, got {month}")


def add_to_monthly_costs(
    *, tenant_id: uuid.UUID, month: datetime.date, breakdown: Mapping[str, ModelTotals]
) -> None:
    """Add per-model calls and µUSD to the tenant's month, creating the row if needed."""
    _check_month(month)
    if any(t.calls < 0 or t.cost_micros < 0 for t in breakdown.values()):
        raise ValueError("monthly cost increments must not be negative")
    calls = sum(t.calls for t in breakdown.values())
    cost_micros = sum(t.cost_micros for t in breakdown.values())
    with connection.cursor() as cursor:
        cursor.execute(
            sql.ADD_TO_MONTHLY_COSTS_SQL,
            [tenant_id, month, cost_micros, micros_to_cents(cost_micros), calls, _breakdown_json(breakdown)],
        )


def adjust_monthly_costs(
    *, tenant_id: uuid.UUID, month: datetime.date, totals: ModelTotals, breakdown: Mapping[str, ModelTotals]
) -> None:
    """Add differences, negative ones too, to the tenant's month (reconciliation's repair).
    With no row yet nothing was recorded, so the differences are the month's whole
    (non-negative) amounts and the upsert applies."""
    _check_month(month)
    with connection.cursor() as cursor:
        cursor.execute(
            sql.ADJUST_MONTHLY_COSTS_SQL,
            [
                totals.cost_micros,
                totals.cost_micros,
                totals.calls,
                _breakdown_json(breakdown),
                tenant_id,
                month,
            ],
        )
        if cursor.rowcount:
            return
    add_to_monthly_costs(tenant_id=tenant_id, month=month, breakdown=breakdown)
