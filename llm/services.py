"""Writes: tenants, LLM calls and their costs, the four stub workers, and the periodic jobs.

One LLM call is one unit of work in one transaction inside the payload's tenant: the call
row, then its cost added to the tenant's month; a job row where the kind has one. A failure
anywhere rolls back all of it, and a call that was already recorded (same tenant, request_id
and endpoint) adds nothing.
"""

import datetime
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from django.db import IntegrityError, connection, transaction
from django.db.models.functions import Now
from psycopg.types.json import Jsonb
from pydantic import ValidationError

from llm import selectors, stub_provider
from llm.api_keys import generate_api_key, hash_api_key
from llm.models import BudgetOptimizationJob, Investigation, JobStatus, Tenant
from llm.schemas import (
    BudgetOptimizationPrompt,
    BudgetOptimizationResult,
    Endpoint,
    ExplanationResult,
    InvalidPayload,
    InvestigationPrompt,
    InvestigationResult,
    LLMTaskPayload,
    RouteResult,
    StubPromptOptions,
)
from llm.selectors import MonthlyCostDrift
from llm.stub_provider import LLMUsage
from skeldir.tenancy import tenant_context

logger = logging.getLogger(__name__)

JobT = TypeVar("JobT", Investigation, BudgetOptimizationJob)


class UnknownTenant(InvalidPayload):
    pass


class CostLimitExceeded(InvalidPayload):
    pass


class ForcedFailure(RuntimeError):
    """Raised on request after the api-call insert, to prove the unit of work is atomic."""


def create_tenant(*, name: str, notification_email: str = "") -> tuple[Tenant, str]:
    """Create a tenant and return it with its API key, which is never stored or shown again."""
    name = name.strip()
    if not name:
        raise ValueError("A tenant needs a non-blank name.")
    api_key = generate_api_key()
    with transaction.atomic():
        tenant = Tenant.objects.create(
            name=name, notification_email=notification_email, api_key_hash=hash_api_key(api_key)
        )
    return tenant, api_key


@dataclass(frozen=True)
class RecordedCall:
    id: uuid.UUID
    created: bool
    created_at: datetime.datetime

    @property
    def month(self) -> datetime.date:
        """First day of the call's UTC month: the key of its monthly cost row."""
        return self.created_at.astimezone(datetime.UTC).date().replace(day=1)


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
    """Insert one call row unless (tenant, request_id, endpoint) is already recorded.

    Runs inside `tenant_context(tenant_id)`. Raw SQL because the ORM cannot say
    `ON CONFLICT DO NOTHING RETURNING`, which is what tells a new call from a redelivery.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO llm_api_calls (tenant_id, endpoint, model, input_tokens, output_tokens,
                                       cost_cents, latency_ms, was_cached, request_id,
                                       correlation_id, request_metadata)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (tenant_id, request_id, endpoint) DO NOTHING
            RETURNING id, created_at
            """,
            [
                tenant_id,
                endpoint,
                usage.model,
                usage.input_tokens,
                usage.output_tokens,
                usage.cost_cents,
                usage.latency_ms,
                was_cached,
                request_id,
                correlation_id,
                None if request_metadata is None else Jsonb(request_metadata),
            ],
        )
        row = cursor.fetchone()
        if row is not None:
            return RecordedCall(id=row[0], created=True, created_at=row[1])
        cursor.execute(
            "SELECT id, created_at FROM llm_api_calls"
            " WHERE tenant_id = %s AND request_id = %s AND endpoint = %s",
            [tenant_id, request_id, endpoint],
        )
        existing_id, created_at = cursor.fetchone()
    return RecordedCall(id=existing_id, created=False, created_at=created_at)


@dataclass(frozen=True)
class ModelTotals:
    calls: int
    cost_cents: int


def record_monthly_costs(
    *, tenant_id: uuid.UUID, month: datetime.date, model_label: str, cost_cents: int, calls: int
) -> None:
    """Add `calls` and `cost_cents` to the tenant's month, totals and `model_label`'s entry."""
    add_to_monthly_costs(
        tenant_id=tenant_id, month=month, breakdown={model_label: ModelTotals(calls, cost_cents)}
    )


# The tenant's breakdown `m.model_breakdown` plus the per-model amounts in `{added}`; entries
# that come to zero calls and zero cents disappear. Raw SQL: no ORM spelling for this merge.
MERGED_BREAKDOWN_SQL = """(
    SELECT coalesce(jsonb_object_agg(model, jsonb_build_object('calls', calls, 'cost_cents', cost_cents)),
                    '{{}}'::jsonb)
      FROM (SELECT key AS model,
                   sum((value ->> 'calls')::bigint) AS calls,
                   sum((value ->> 'cost_cents')::bigint) AS cost_cents
              FROM (SELECT * FROM jsonb_each(m.model_breakdown)
                    UNION ALL
                    SELECT * FROM jsonb_each({added})) AS entries
             GROUP BY key) AS merged
     WHERE calls <> 0 OR cost_cents <> 0
)"""

ADD_TO_MONTHLY_COSTS_SQL = f"""
    INSERT INTO llm_monthly_costs AS m (tenant_id, month, total_cost_cents, total_calls, model_breakdown)
    VALUES (%s, %s, %s, %s, %s)
    ON CONFLICT (tenant_id, month) DO UPDATE SET
        total_cost_cents = m.total_cost_cents + EXCLUDED.total_cost_cents,
        total_calls = m.total_calls + EXCLUDED.total_calls,
        model_breakdown = {MERGED_BREAKDOWN_SQL.format(added="EXCLUDED.model_breakdown")},
        updated_at = statement_timestamp()
"""

ADJUST_MONTHLY_COSTS_SQL = f"""
    UPDATE llm_monthly_costs AS m SET
        total_cost_cents = m.total_cost_cents + %s,
        total_calls = m.total_calls + %s,
        model_breakdown = {MERGED_BREAKDOWN_SQL.format(added="%s::jsonb")},
        updated_at = statement_timestamp()
     WHERE m.tenant_id = %s AND m.month = %s
"""


def _breakdown_json(breakdown: Mapping[str, ModelTotals]) -> Jsonb:
    return Jsonb({model: {"calls": t.calls, "cost_cents": t.cost_cents} for model, t in breakdown.items()})


def _check_month(month: datetime.date) -> None:
    if month.day != 1:
        raise ValueError(f"month must be the first day of a month, got {month}")


def add_to_monthly_costs(
    *, tenant_id: uuid.UUID, month: datetime.date, breakdown: Mapping[str, ModelTotals]
) -> None:
    """Add per-model calls and cents to the tenant's month, creating the row if needed.

    One statement: concurrent writers serialise on the row lock and each adds to what the
    previous one committed, so nothing is lost.
    """
    _check_month(month)
    if any(t.calls < 0 or t.cost_cents < 0 for t in breakdown.values()):
        raise ValueError("monthly cost increments must not be negative")
    calls = sum(t.calls for t in breakdown.values())
    cost_cents = sum(t.cost_cents for t in breakdown.values())
    with connection.cursor() as cursor:
        cursor.execute(
            ADD_TO_MONTHLY_COSTS_SQL, [tenant_id, month, cost_cents, calls, _breakdown_json(breakdown)]
        )


def adjust_monthly_costs(
    *, tenant_id: uuid.UUID, month: datetime.date, totals: ModelTotals, breakdown: Mapping[str, ModelTotals]
) -> None:
    """Add differences, negative ones too, to the tenant's month (reconciliation's repair).

    An UPDATE rather than the upsert, whose candidate row would fail the non-negative checks
    before its conflict is even found. With no row yet, nothing was recorded, so the
    differences are the month's whole (non-negative) amounts and the upsert applies.
    """
    _check_month(month)
    with connection.cursor() as cursor:
        cursor.execute(
            ADJUST_MONTHLY_COSTS_SQL,
            [totals.cost_cents, totals.calls, _breakdown_json(breakdown), tenant_id, month],
        )
        if cursor.rowcount:
            return
    add_to_monthly_costs(tenant_id=tenant_id, month=month, breakdown=breakdown)


@dataclass(frozen=True)
class StubCall:
    payload: LLMTaskPayload
    endpoint: Endpoint
    request_id: str
    usage: LLMUsage
    call: RecordedCall

    def receipt(self) -> dict:
        return {
            "tenant_id": self.payload.tenant_id,
            "endpoint": self.endpoint,
            "request_id": self.request_id,
            "correlation_id": self.payload.correlation_id,
            "api_call_id": self.call.id,
            "recorded": self.call.created,
            "model": self.usage.model,
            "input_tokens": self.usage.input_tokens,
            "output_tokens": self.usage.output_tokens,
            "cost_cents": self.usage.cost_cents,
            "latency_ms": self.usage.latency_ms,
        }


def _parse_prompt(model, prompt: dict):
    try:
        return model.model_validate(prompt)
    except ValidationError as error:
        raise InvalidPayload.from_validation_error(error, what="prompt") from None


def _record_stub_call(
    payload: LLMTaskPayload,
    endpoint: Endpoint,
    *,
    force_failure: bool,
    record_job: Callable[[RecordedCall, LLMUsage, str], object] | None = None,
) -> tuple[StubCall, object]:
    """The unit of work every stub worker shares; see the module docstring."""
    options = _parse_prompt(StubPromptOptions, payload.prompt)
    usage = stub_provider.usage_for(
        endpoint, payload.prompt, model=options.model, simulated_cost_cents=options.simulated_cost_cents
    )
    if usage.cost_cents > payload.max_cost_cents:
        raise CostLimitExceeded(
            f"The {endpoint} call would cost {usage.cost_cents} cents, over max_cost_cents "
            f"{payload.max_cost_cents}; nothing was recorded."
        )
    if options.sleep_ms:
        time.sleep(options.sleep_ms / 1000)  # provider time, outside any transaction
    request_id = payload.request_id_for(endpoint)
    try:
        with tenant_context(payload.tenant_id):
            call = record_api_call(
                tenant_id=payload.tenant_id,
                endpoint=endpoint,
                request_id=request_id,
                usage=usage,
                correlation_id=payload.correlation_id,
            )
            if force_failure:
                raise ForcedFailure(f"forced failure after recording {endpoint} call {request_id}")
            if call.created:
                record_monthly_costs(
                    tenant_id=payload.tenant_id,
                    month=call.month,
                    model_label=usage.model,
                    cost_cents=usage.cost_cents,
                    calls=1,
                )
            job = record_job(call, usage, request_id) if record_job else None
    except IntegrityError as error:
        # The tenant foreign key is deferred: an unknown tenant surfaces at commit.
        if getattr(error.__cause__, "sqlstate", None) == "23503":
            raise UnknownTenant(f"Unknown tenant {payload.tenant_id}; nothing was recorded.") from None
        raise
    return StubCall(payload, endpoint, request_id, usage, call), job


def _completed_job(model: type[JobT], call: RecordedCall, request_id: str, **fields) -> JobT:
    """The job row of this call: created with it, or the one a previous delivery created."""
    if not call.created:
        existing = model.objects.filter(request_id=request_id).first()
        if existing is not None:
            return existing
    return model.objects.create(request_id=request_id, status=JobStatus.COMPLETED, **fields)


def route_request(payload: LLMTaskPayload, *, force_failure: bool = False) -> RouteResult:
    stub, _ = _record_stub_call(payload, "route", force_failure=force_failure)
    return RouteResult(**stub.receipt(), route=stub_provider.route_for(payload.prompt))


def generate_explanation(payload: LLMTaskPayload, *, force_failure: bool = False) -> ExplanationResult:
    stub, _ = _record_stub_call(payload, "explanation", force_failure=force_failure)
    return ExplanationResult(**stub.receipt(), explanation=stub_provider.explanation_for(payload.prompt))


def run_investigation(payload: LLMTaskPayload, *, force_failure: bool = False) -> InvestigationResult:
    prompt = _parse_prompt(InvestigationPrompt, payload.prompt)

    def record_investigation(call: RecordedCall, usage: LLMUsage, request_id: str) -> Investigation:
        return _completed_job(
            Investigation,
            call,
            request_id,
            tenant_id=payload.tenant_id,
            query=prompt.question,
            result=stub_provider.investigation_for(prompt.question),
            cost_cents=usage.cost_cents,
        )

    stub, job = _record_stub_call(
        payload, "investigation", force_failure=force_failure, record_job=record_investigation
    )
    return InvestigationResult(
        **stub.receipt(), investigation_id=job.id, status=job.status, result=job.result
    )


def optimize_budget(payload: LLMTaskPayload, *, force_failure: bool = False) -> BudgetOptimizationResult:
    prompt = _parse_prompt(BudgetOptimizationPrompt, payload.prompt)

    def record_budget_job(call: RecordedCall, usage: LLMUsage, request_id: str) -> BudgetOptimizationJob:
        return _completed_job(
            BudgetOptimizationJob,
            call,
            request_id,
            tenant_id=payload.tenant_id,
            recommendations=stub_provider.budget_recommendations_for(
                total_budget_cents=prompt.total_budget_cents, channels=prompt.channels
            ),
            cost_cents=usage.cost_cents,
        )

    stub, job = _record_stub_call(
        payload, "budget_optimization", force_failure=force_failure, record_job=record_budget_job
    )
    return BudgetOptimizationResult(
        **stub.receipt(), job_id=job.id, status=job.status, recommendations=job.recommendations
    )


STUB_WORKERS: dict[Endpoint, Callable[..., object]] = {
    "route": route_request,
    "explanation": generate_explanation,
    "investigation": run_investigation,
    "budget_optimization": optimize_budget,
}


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
                    "monthly cost drift: tenant %s month %s recorded %s calls / %s cents, "
                    "calls add up to %s / %s%s",
                    tenant_id,
                    drift.month.isoformat(),
                    drift.recorded_calls,
                    drift.recorded_cost_cents,
                    drift.actual_calls,
                    drift.actual_cost_cents,
                    "; fixing" if fix else "",
                )
                if fix:
                    adjust_monthly_costs(
                        tenant_id=tenant_id,
                        month=drift.month,
                        breakdown=_breakdown_difference(drift),
                        totals=ModelTotals(
                            calls=drift.actual_calls - drift.recorded_calls,
                            cost_cents=drift.actual_cost_cents - drift.recorded_cost_cents,
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
            cost_cents=actual.get("cost_cents", 0) - recorded.get("cost_cents", 0),
        )
    return difference


def sweep_stale_jobs(*, older_than: datetime.timedelta) -> dict[str, int]:
    """Fail investigations and budget jobs stuck in `running` for longer than `older_than`."""
    swept = {"investigations": 0, "budget_optimization_jobs": 0}
    for tenant_id in selectors.iter_tenant_ids():
        with tenant_context(tenant_id):
            for model in (Investigation, BudgetOptimizationJob):
                stale = model.objects.filter(status=JobStatus.RUNNING, updated_at__lt=Now() - older_than)
                failure = {"error": f"timed out: still running after {older_than}"}
                result_field = "result" if model is Investigation else "recommendations"
                count = stale.update(status=JobStatus.FAILED, updated_at=Now(), **{result_field: failure})
                swept[model._meta.db_table] += count
                if count:
                    logger.warning(
                        "marked %s stale %s of tenant %s as failed", count, model._meta.db_table, tenant_id
                    )
    return swept
