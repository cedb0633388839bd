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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from django.db import IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.db.models.functions import Now
from psycopg.types.json import Jsonb
from pydantic import ValidationError

from llm import metrics, selectors, stub_provider
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
        return utc_month(self.created_at)


def utc_month(at: datetime.datetime) -> datetime.date:
    """First day of the UTC month of `at`: the key of a call's monthly cost row."""
    return at.astimezone(datetime.UTC).date().replace(day=1)


INSERT_API_CALL_SQL = """
    INSERT INTO llm_api_calls (tenant_id, endpoint, model, input_tokens, output_tokens,
                               cost_cents, latency_ms, was_cached, request_id,
                               correlation_id, request_metadata)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (tenant_id, request_id, endpoint) DO NOTHING
    RETURNING id, created_at
"""


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
            INSERT_API_CALL_SQL,
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


def _stub_usage(payload: LLMTaskPayload, endpoint: Endpoint) -> tuple[LLMUsage, StubPromptOptions]:
    """The stub's usage for this payload, checked against its cost cap before any write."""
    options = _parse_prompt(StubPromptOptions, payload.prompt)
    usage = stub_provider.usage_for(
        endpoint, payload.prompt, model=options.model, simulated_cost_cents=options.simulated_cost_cents
    )
    if usage.cost_cents > payload.max_cost_cents:
        raise CostLimitExceeded(
            f"The {endpoint} call would cost {usage.cost_cents} cents, over max_cost_cents "
            f"{payload.max_cost_cents}; nothing was recorded."
        )
    return usage, options


def _record_stub_call(
    payload: LLMTaskPayload,
    endpoint: Endpoint,
    *,
    force_failure: bool,
    record_job: Callable[[RecordedCall, LLMUsage, str], object] | None = None,
) -> tuple[StubCall, object]:
    """The unit of work every stub worker shares; see the module docstring."""
    usage, options = _stub_usage(payload, endpoint)
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
    metrics.observe_stub_call(endpoint=endpoint, usage=usage, recorded=call.created)
    return StubCall(payload, endpoint, request_id, usage, call), job


TRANSIENT_DATABASE_ERRORS = (OperationalError, InterfaceError)


class UnknownJob(InvalidPayload):
    pass


def _job_result_field(model: type[JobT]) -> str:
    return "result" if model is Investigation else "recommendations"


def _run_job_call(
    model: type[JobT],
    payload: LLMTaskPayload,
    endpoint: Endpoint,
    *,
    job_id: uuid.UUID | None,
    force_failure: bool,
    prompt_model: type,
    fields_for: Callable[[object, LLMUsage], dict],
) -> tuple[StubCall, JobT]:
    """A job kind's unit of work: the call, its cost, and the job row completed with them.

    Without `job_id` the job row is created with the call (or found, on a redelivery). With
    one, the row the API created as `pending` moves to `running`, then to `completed` in the
    call's own transaction, or to `failed` with the reason when the work cannot succeed.
    Transient database errors leave it `running` for the task's retry (or, in the end, for
    the stale-job sweeper).
    """
    if job_id is None:
        prompt = _parse_prompt(prompt_model, payload.prompt)

        def record_job(call: RecordedCall, usage: LLMUsage, request_id: str) -> JobT:
            if not call.created:
                existing = model.objects.filter(request_id=request_id).first()
                if existing is not None:
                    return existing
            return model.objects.create(
                tenant_id=payload.tenant_id,
                request_id=request_id,
                status=JobStatus.COMPLETED,
                **fields_for(prompt, usage),
            )

        return _record_stub_call(payload, endpoint, force_failure=force_failure, record_job=record_job)

    _start_job(model, tenant_id=payload.tenant_id, job_id=job_id)

    def complete_job(call: RecordedCall, usage: LLMUsage, request_id: str) -> JobT:
        model.objects.filter(id=job_id).update(
            status=JobStatus.COMPLETED, updated_at=Now(), **fields_for(prompt, usage)
        )
        return model.objects.get(id=job_id)

    try:
        prompt = _parse_prompt(prompt_model, payload.prompt)
        return _record_stub_call(payload, endpoint, force_failure=force_failure, record_job=complete_job)
    except TRANSIENT_DATABASE_ERRORS:
        raise
    except Exception as error:
        with tenant_context(payload.tenant_id):
            model.objects.filter(id=job_id).update(
                status=JobStatus.FAILED, updated_at=Now(), **{_job_result_field(model): {"error": str(error)}}
            )
        raise


def _start_job(model: type[JobT], *, tenant_id: uuid.UUID, job_id: uuid.UUID) -> None:
    with tenant_context(tenant_id):
        started = model.objects.filter(id=job_id, status__in=[JobStatus.PENDING, JobStatus.RUNNING]).update(
            status=JobStatus.RUNNING, updated_at=Now()
        )
        if started:
            return
        status = model.objects.filter(id=job_id).values_list("status", flat=True).first()
    if status is None:
        raise UnknownJob(
            f"No {model._meta.verbose_name} {job_id} for tenant {tenant_id}; nothing was recorded."
        )
    if status != JobStatus.COMPLETED:  # a completed job's redelivery re-runs idempotently
        raise UnknownJob(f"{model._meta.verbose_name} {job_id} is already {status}; nothing was recorded.")


def route_request(payload: LLMTaskPayload, *, force_failure: bool = False) -> RouteResult:
    stub, _ = _record_stub_call(payload, "route", force_failure=force_failure)
    return RouteResult(**stub.receipt(), route=stub_provider.route_for(payload.prompt))


def generate_explanation(payload: LLMTaskPayload, *, force_failure: bool = False) -> ExplanationResult:
    stub, _ = _record_stub_call(payload, "explanation", force_failure=force_failure)
    return ExplanationResult(**stub.receipt(), explanation=stub_provider.explanation_for(payload.prompt))


def run_investigation(
    payload: LLMTaskPayload, *, force_failure: bool = False, job_id: uuid.UUID | None = None
) -> InvestigationResult:
    stub, job = _run_job_call(
        Investigation,
        payload,
        "investigation",
        job_id=job_id,
        force_failure=force_failure,
        prompt_model=InvestigationPrompt,
        fields_for=lambda prompt, usage: {
            "query": prompt.question,
            "result": stub_provider.investigation_for(prompt.question),
            "cost_cents": usage.cost_cents,
        },
    )
    return InvestigationResult(
        **stub.receipt(), investigation_id=job.id, status=job.status, result=job.result
    )


def optimize_budget(
    payload: LLMTaskPayload, *, force_failure: bool = False, job_id: uuid.UUID | None = None
) -> BudgetOptimizationResult:
    stub, job = _run_job_call(
        BudgetOptimizationJob,
        payload,
        "budget_optimization",
        job_id=job_id,
        force_failure=force_failure,
        prompt_model=BudgetOptimizationPrompt,
        fields_for=lambda prompt, usage: {
            "recommendations": stub_provider.budget_recommendations_for(
                total_budget_cents=prompt.total_budget_cents, channels=prompt.channels
            ),
            "cost_cents": usage.cost_cents,
        },
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
    """Fail investigations and budget jobs stuck for longer than `older_than`: `running`
    ones whose worker died or gave up, and `pending` ones whose task never got sent."""
    swept = {"investigations": 0, "budget_optimization_jobs": 0}
    for tenant_id in selectors.iter_tenant_ids():
        with tenant_context(tenant_id):
            for model in (Investigation, BudgetOptimizationJob):
                stale = model.objects.filter(
                    status__in=[JobStatus.PENDING, JobStatus.RUNNING], updated_at__lt=Now() - older_than
                )
                failure = {"error": f"timed out: not finished {older_than} after its last update"}
                result_field = "result" if model is Investigation else "recommendations"
                count = stale.update(status=JobStatus.FAILED, updated_at=Now(), **{result_field: failure})
                swept[model._meta.db_table] += count
                if count:
                    logger.warning(
                        "marked %s stale %s of tenant %s as failed", count, model._meta.db_table, tenant_id
                    )
    return swept


def start_investigation(
    *, tenant_id: uuid.UUID, question: str, request_id: str | None, max_cost_cents: int
) -> Investigation:
    """Create the `pending` investigation and send its task once the transaction commits.

    The same request_id (a client's Idempotency-Key) finds the job it created before and
    sends nothing again.
    """
    return _start_job_request(
        Investigation,
        "investigation",
        tenant_id=tenant_id,
        request_id=request_id,
        prompt={"question": question},
        max_cost_cents=max_cost_cents,
        job_fields={"query": question},
    )


def start_budget_optimization(
    *,
    tenant_id: uuid.UUID,
    total_budget_cents: int,
    channels: Mapping[str, float],
    request_id: str | None,
    max_cost_cents: int,
) -> BudgetOptimizationJob:
    """Create the `pending` budget job and send its task once the transaction commits."""
    return _start_job_request(
        BudgetOptimizationJob,
        "budget_optimization",
        tenant_id=tenant_id,
        request_id=request_id,
        prompt={"total_budget_cents": total_budget_cents, "channels": dict(channels)},
        max_cost_cents=max_cost_cents,
        job_fields={},
    )


def _start_job_request(
    model: type[JobT],
    endpoint: Endpoint,
    *,
    tenant_id: uuid.UUID,
    request_id: str | None,
    prompt: dict,
    max_cost_cents: int,
    job_fields: dict,
) -> JobT:
    from llm.tasks import enqueue_on_commit  # tasks import this module

    payload = LLMTaskPayload(
        tenant_id=tenant_id,
        request_id=request_id or str(uuid.uuid4()),
        prompt=prompt,
        max_cost_cents=max_cost_cents,
    )
    with tenant_context(tenant_id):
        job, created = model.objects.get_or_create(
            request_id=payload.request_id, defaults={"tenant_id": tenant_id, **job_fields}
        )
        if created:
            enqueue_on_commit(endpoint, payload, job_id=job.id)
    return job


def request_llm_call(
    *, tenant_id: uuid.UUID, endpoint: Endpoint, prompt: dict, request_id: str | None, max_cost_cents: int
) -> str:
    """Send a route or explanation task once the transaction commits; returns its request_id.
    A repeated request_id is sent again and recorded once."""
    from llm.tasks import enqueue_on_commit  # tasks import this module

    payload = LLMTaskPayload(
        tenant_id=tenant_id,
        request_id=request_id or str(uuid.uuid4()),
        prompt=prompt,
        max_cost_cents=max_cost_cents,
    )
    with tenant_context(tenant_id):
        enqueue_on_commit(endpoint, payload)
    return payload.request_id


# --- Batched ingest -------------------------------------------------------------------------
#
# Many calls, of one tenant or several, in one transaction per tenant: one multi-row insert of
# the call rows that skips the ones already recorded, then one monthly upsert per month of the
# rows it did insert. Within a tenant, rows go in (request_id, endpoint) order and months in
# date order, and tenants go in id order: concurrent batches that overlap take their locks in
# the same order, so they wait for each other instead of deadlocking.

BATCH_MAX_CALLS = 10_000  # one statement's worth; a larger batch is the caller's to split
BATCH_ENDPOINTS: tuple[Endpoint, ...] = ("route", "explanation")  # the kinds without a job row


class InvalidBatch(InvalidPayload):
    pass


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
    cost_cents: int  # the cost of the new calls
    tenants: int

    def as_json(self) -> dict:
        return {
            "calls": self.recorded + self.already_recorded,
            "recorded": self.recorded,
            "already_recorded": self.already_recorded,
            "cost_cents": self.cost_cents,
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
    recorded = cost_cents = 0
    for tenant_id in sorted(by_tenant):
        tenant_calls = sorted(by_tenant[tenant_id], key=lambda c: (c.request_id, c.endpoint))
        try:
            with tenant_context(tenant_id):
                inserted = _insert_new_api_calls(tenant_id=tenant_id, calls=tenant_calls)
                months: dict[datetime.date, dict[str, ModelTotals]] = {}
                for model, cost, created_at in inserted:
                    # Rows inserted by one statement share its time, so this is one month;
                    # kept general.
                    month = utc_month(created_at)
                    breakdown = months.setdefault(month, {})
                    totals = breakdown.get(model, ModelTotals(0, 0))
                    breakdown[model] = ModelTotals(totals.calls + 1, totals.cost_cents + cost)
                for month in sorted(months):
                    add_to_monthly_costs(tenant_id=tenant_id, month=month, breakdown=months[month])
        except IntegrityError as error:
            # The tenant foreign key is deferred: a tenant deleted meanwhile surfaces at commit.
            if getattr(error.__cause__, "sqlstate", None) == "23503":
                raise UnknownTenant(f"Unknown tenant {tenant_id}; nothing was recorded for it.") from None
            raise
        metrics.observe_batch_calls(calls=tenant_calls, inserted=inserted)
        recorded += len(inserted)
        cost_cents += sum(cost for _, cost, _ in inserted)
    return RecordedBatch(recorded, len(calls) - recorded, cost_cents, len(by_tenant))


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
    cost_cents, created_at) of the rows inserted, not of those already there.

    Raw SQL: the ORM's bulk_create(ignore_conflicts=True) cannot return which rows it
    inserted, and that is what keeps a replayed call out of the monthly totals. The rows
    travel as one array per column, so the statement is the same whatever the batch size.
    """
    columns = [
        [c.endpoint for c in calls],
        [c.usage.model for c in calls],
        [c.usage.input_tokens for c in calls],
        [c.usage.output_tokens for c in calls],
        [c.usage.cost_cents for c in calls],
        [c.usage.latency_ms for c in calls],
        [c.was_cached for c in calls],
        [c.request_id for c in calls],
        [c.correlation_id for c in calls],
        [None if c.request_metadata is None else Jsonb(c.request_metadata) for c in calls],
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO llm_api_calls (tenant_id, endpoint, model, input_tokens, output_tokens,
                                       cost_cents, latency_ms, was_cached, request_id,
                                       correlation_id, request_metadata)
            SELECT %s, * FROM unnest(%s::text[], %s::text[], %s::integer[], %s::integer[],
                                     %s::bigint[], %s::integer[], %s::boolean[], %s::text[],
                                     %s::text[], %s::jsonb[])
            ON CONFLICT (tenant_id, request_id, endpoint) DO NOTHING
            RETURNING model, cost_cents, created_at
            """,
            [tenant_id, *columns],
        )
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
            usage, _ = _stub_usage(payload, endpoint)
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
