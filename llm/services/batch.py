"""Batched ingest: many calls, of one tenant or several, recorded exactly once each.

One transaction per tenant: one multi-row insert of the call rows that skips the ones
already recorded, then one monthly upsert per month of the rows it did insert. Within a
tenant, rows go in (request_id, endpoint) order and months in date order, and tenants go in
id order: concurrent batches that overlap take their locks in the same order, so they wait
for each other instead of deadlocking.
"""

import datetime
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from django.db import connection
from psycopg.types.json import Jsonb

from llm import metrics, sql
from llm.models import Budget, Tenant
from llm.payloads import Endpoint, InvalidPayload, LLMTaskPayload
from llm.prices import NoPriceInForce
from llm.services.accounting import ModelTotals, add_to_monthly_costs, call_transaction, utc_month
from llm.services.errors import CostLimitExceeded, InvalidBatch, UnknownTenant
from llm.services.settlement import count_unreserved_spend
from llm.services.workers import stub_usage
from llm.stub_provider import LLMUsage

BATCH_MAX_CALLS = 10_000  # one statement's worth; a larger batch is the caller's to split
BATCH_ENDPOINTS: tuple[Endpoint, ...] = ("route", "explanation")  # the kinds without a job row


@dataclass(frozen=True)
class ApiCallToRecord:
    """One call of a batch: what `record_api_call` takes, with its tenant."""

    tenant_id: uuid.UUID
    endpoint: str
    request_id: str
    usage: LLMUsage
    correlation_id: str | None = None
    was_cached: bool = False
    request_metadata: dict | None = None

    @property
    def key(self) -> tuple[uuid.UUID, str, str]:
        """What makes a call unique: a second call with the same key is a redelivery."""
        return (self.tenant_id, self.request_id, self.endpoint)


@dataclass(frozen=True)
class RecordedBatch:
    recorded: int  # new calls, now counted in their months
    already_recorded: int  # recorded before (or twice in the batch): nothing added for them
    cost_micros: int  # the cost of the new calls
    tenants: int

    def as_json(self) -> dict:
        """The batch task's return value, stored by the result backend outside the tenants'
        rows: counts only, no cost (the caller reads costs inside each tenant)."""
        return {
            "calls": self.recorded + self.already_recorded,
            "recorded": self.recorded,
            "already_recorded": self.already_recorded,
            "tenants": self.tenants,
        }


def record_api_calls_batch(*, calls: Sequence[ApiCallToRecord]) -> RecordedBatch:
    """Record `calls` exactly once each, with their costs, one transaction per tenant.

    Everything is checked before anything is written: a malformed call, a key repeated with
    different contents or an unknown tenant raises InvalidBatch / UnknownTenant and writes
    nothing. A replayed batch adds nothing. Each tenant's part commits or rolls back whole;
    should the database fail part-way through a batch of several tenants, the tenants before
    it stay recorded and replaying the batch records the rest, each call still once.
    """
    by_tenant = _validated_batch(calls)
    known = set(Tenant.objects.filter(id__in=list(by_tenant)).values_list("id", flat=True))
    if unknown := sorted(str(t) for t in by_tenant.keys() - known):
        raise UnknownTenant(f"Unknown tenant(s) {', '.join(unknown)}; nothing was recorded.")
    recorded = cost_micros = 0
    for tenant_id in sorted(by_tenant):
        tenant_calls = sorted(by_tenant[tenant_id], key=lambda c: (c.request_id, c.endpoint))
        with call_transaction(tenant_id):
            inserted = _insert_new_api_calls(tenant_id=tenant_id, calls=tenant_calls)
            months: dict[datetime.date, dict[str, ModelTotals]] = {}
            for model, cost, created_at in inserted:
                # Rows inserted by one statement share its time, so this is one month; kept general.
                breakdown = months.setdefault(utc_month(created_at), {})
                totals = breakdown.get(model, ModelTotals(0, 0))
                breakdown[model] = ModelTotals(totals.calls + 1, totals.cost_micros + cost)
            for month in sorted(months):
                add_to_monthly_costs(tenant_id=tenant_id, month=month, breakdown=months[month])
            _count_in_budget(tenant_id=tenant_id, inserted=inserted)
        metrics.observe_batch_calls(calls=tenant_calls, inserted=inserted)
        recorded += len(inserted)
        cost_micros += sum(cost for _, cost, _ in inserted)
    return RecordedBatch(recorded, len(calls) - recorded, cost_micros, len(by_tenant))


def _count_in_budget(*, tenant_id: uuid.UUID, inserted: list[tuple[str, int, datetime.datetime]]) -> None:
    """A budgeted tenant's batch: its calls were made already (nothing can block them), but
    their cost counts in the budget like any other call's."""
    if not inserted:
        return
    thresholds = Budget.objects.values_list("thresholds", flat=True).first()
    if thresholds is None:
        return
    at = inserted[0][2]  # one statement's rows share its time
    count_unreserved_spend(
        tenant_id=tenant_id,
        at=at,
        cost_micros=sum(cost for _, cost, _ in inserted),
        thresholds=tuple(thresholds),
    )


def _validated_batch(calls: Sequence[ApiCallToRecord]) -> dict[uuid.UUID, list[ApiCallToRecord]]:
    """The batch's distinct calls by tenant, or InvalidBatch naming the first problem."""
    if not isinstance(calls, Sequence) or isinstance(calls, str):
        raise InvalidBatch("Invalid batch: calls must be a sequence of ApiCallToRecord.")
    if len(calls) > BATCH_MAX_CALLS:
        raise InvalidBatch(f"Invalid batch: {len(calls)} calls, at most {BATCH_MAX_CALLS} per batch.")
    seen: dict[tuple[uuid.UUID, str, str], int] = {}
    by_tenant: dict[uuid.UUID, list[ApiCallToRecord]] = {}
    for index, call in enumerate(calls):
        if problem := _batch_call_problem(call):
            raise InvalidBatch(f"Invalid batch: calls[{index}]: {problem}; nothing was recorded.")
        first = seen.setdefault(call.key, index)
        if first != index:
            if calls[first] != call:
                raise InvalidBatch(
                    f"Invalid batch: calls[{index}] repeats the tenant, request_id and endpoint of "
                    f"calls[{first}] with different contents; nothing was recorded."
                )
            continue  # the same call twice: a redelivery within the batch, counted once
        by_tenant.setdefault(call.tenant_id, []).append(call)
    return by_tenant


def _batch_call_problem(call: object) -> str | None:
    if not isinstance(call, ApiCallToRecord):
        return f"expected an ApiCallToRecord, got {type(call).__name__}"
    if not isinstance(call.tenant_id, uuid.UUID):
        return f"tenant_id must be a UUID, got {call.tenant_id!r}"
    for name in ("endpoint", "request_id"):
        value = getattr(call, name)
        if not isinstance(value, str) or not value.strip():
            return f"{name} must be a non-blank string, got {value!r}"
    if not isinstance(call.usage, LLMUsage):
        return f"usage must be an LLMUsage, got {type(call.usage).__name__}"
    if call.correlation_id is not None and not isinstance(call.correlation_id, str):
        return f"correlation_id must be a string or None, got {call.correlation_id!r}"
    if not isinstance(call.was_cached, bool):
        return f"was_cached must be a bool, got {call.was_cached!r}"
    if call.request_metadata is not None and not isinstance(call.request_metadata, dict):
        return f"request_metadata must be a dict or None, got {type(call.request_metadata).__name__}"
    return None


def _insert_new_api_calls(
    *, tenant_id: uuid.UUID, calls: list[ApiCallToRecord]
) -> list[tuple[str, int, datetime.datetime]]:
    """Insert one tenant's call rows in one statement, in the given order; return (model,
    cost_micros, created_at) of the rows inserted, not of those already there.

    The rows travel as one array per column (see `sql.INSERT_API_CALLS_BATCH_SQL`).
    """
    columns = [
        [c.endpoint for c in calls],
        [c.usage.model for c in calls],
        [c.usage.input_tokens for c in calls],
        [c.usage.cached_input_tokens for c in calls],
        [c.usage.output_tokens for c in calls],
        [c.usage.latency_ms for c in calls],
        [c.was_cached for c in calls],
        [c.request_id for c in calls],
        [c.correlation_id for c in calls],
        [None if c.request_metadata is None else Jsonb(c.request_metadata) for c in calls],
    ]
    with connection.cursor() as cursor:
        # The insert prices each row by joining the catalogue, which would skip an unpriced one.
        cursor.execute(sql.UNPRICED_MODELS_SQL, [sorted({c.usage.model for c in calls})])
        if unpriced := [row[0] for row in cursor.fetchall()]:
            raise NoPriceInForce(
                f"Invalid batch: no price in force for model(s) {', '.join(unpriced)}; nothing was recorded."
            )
        cursor.execute(sql.INSERT_API_CALLS_BATCH_SQL, [tenant_id, *columns])
        return cursor.fetchall()


def record_stub_calls_batch(*, payloads: Sequence[LLMTaskPayload], endpoint: Endpoint) -> RecordedBatch:
    """The batch form of the route and explanation stub workers: each payload's stub usage,
    all of them checked (prompt options, cost cap) before `record_api_calls_batch` runs.

    Nothing waits for `sleep_ms`: a batch records calls whose provider time has passed.
    """
    if endpoint not in BATCH_ENDPOINTS:
        raise InvalidBatch(
            f"Invalid batch: endpoint {endpoint!r} cannot be batched (only {', '.join(BATCH_ENDPOINTS)}: "
            "the other kinds write a job row with each call)."
        )
    calls = []
    for index, payload in enumerate(payloads):
        try:
            usage, _ = stub_usage(payload, endpoint)
        except CostLimitExceeded as error:
            raise CostLimitExceeded(f"payloads[{index}]: {error}") from None
        except InvalidPayload as error:
            raise InvalidBatch(f"Invalid batch: payloads[{index}]: {error}; nothing was recorded.") from None
        calls.append(
            ApiCallToRecord(
                tenant_id=payload.tenant_id,
                endpoint=endpoint,
                request_id=payload.request_id_for(endpoint),
                usage=usage,
                correlation_id=payload.correlation_id,
            )
        )
    return record_api_calls_batch(calls=calls)
