"""Jobs: investigations and budget optimizations, one lifecycle for both.

A job kind names its table, its prompt contract and how its outcome is derived; everything
else (`running` while its call is made, `completed` in the call's own transaction or
`failed` with a reason, swept when stuck) is the same code. The API creates them `pending`
(`llm.services.intake`).
"""

import datetime
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from django.db.models.functions import Now
from pydantic import BaseModel

from llm import selectors, stub_provider
from llm.models import BudgetOptimizationJob, Investigation, JobStatus, LLMJob
from llm.payloads import (
    BudgetOptimizationPrompt,
    Endpoint,
    InvalidPayload,
    InvestigationPrompt,
)
from llm.services.errors import UnknownJob
from skeldir.tenancy import tenant_context

logger = logging.getLogger(__name__)

# What a tenant reads in a failed job whose cause is not its own input; the cause goes to the
# log, since database and worker errors carry internals (statements, parameters, hosts).
INTERNAL_FAILURE_REASON = "The LLM call could not be completed; nothing was charged. Please retry."


@dataclass(frozen=True)
class JobKind:
    endpoint: Endpoint
    model: type[LLMJob]
    prompt: type[BaseModel]
    # The job's outcome fields from its validated prompt (the stub's deterministic answer).
    outcome: Callable[[BaseModel], dict]


def _investigation_outcome(prompt: InvestigationPrompt) -> dict:
    return {"query": prompt.question, "result": stub_provider.investigation_for(prompt.question)}


def _budget_outcome(prompt: BudgetOptimizationPrompt) -> dict:
    recommendations = stub_provider.budget_recommendations_for(
        total_budget_cents=prompt.total_budget_cents, channels=prompt.channels
    )
    return {"recommendations": recommendations}


INVESTIGATION = JobKind("investigation", Investigation, InvestigationPrompt, _investigation_outcome)
BUDGET_OPTIMIZATION = JobKind(
    "budget_optimization", BudgetOptimizationJob, BudgetOptimizationPrompt, _budget_outcome
)
JOB_KINDS: dict[Endpoint, JobKind] = {kind.endpoint: kind for kind in (INVESTIGATION, BUDGET_OPTIMIZATION)}


def mark_job_running(kind: JobKind, *, tenant_id: uuid.UUID, job_id: uuid.UUID) -> None:
    """Move the API's job to `running`, in a transaction of its own so that pollers see it
    while the call runs. A completed job's redelivery may run again (idempotently); a failed
    or unknown one may not."""
    with tenant_context(tenant_id):
        model = kind.model
        started = model.objects.filter(id=job_id, status__in=[JobStatus.PENDING, JobStatus.RUNNING]).update(
            status=JobStatus.RUNNING, updated_at=Now()
        )
        if started:
            return
        status = model.objects.filter(id=job_id).values_list("status", flat=True).first()
    name = model._meta.verbose_name
    if status is None:
        raise UnknownJob(f"No {name} {job_id} for tenant {tenant_id}; nothing was recorded.")
    if status != JobStatus.COMPLETED:
        raise UnknownJob(f"{name} {job_id} is already {status}; nothing was recorded.")


def save_completed_job(
    kind: JobKind,
    *,
    tenant_id: uuid.UUID,
    job_id: uuid.UUID | None,
    request_id: str,
    recorded_before: bool,
    fields: Mapping[str, object],
) -> LLMJob:
    """In the call's transaction: the job row completed with the call's outcome.

    With `job_id`, the API's row is updated and returned as it now stands. Without one, the
    row is created with the call, or found when the call was `recorded_before`.
    """
    model = kind.model
    if job_id is not None:
        model.objects.filter(id=job_id).update(status=JobStatus.COMPLETED, updated_at=Now(), **fields)
        return model(
            id=job_id, tenant_id=tenant_id, request_id=request_id, status=JobStatus.COMPLETED, **fields
        )
    if recorded_before and (existing := model.objects.filter(request_id=request_id).first()):
        return existing
    return model.objects.create(
        tenant_id=tenant_id, request_id=request_id, status=JobStatus.COMPLETED, **fields
    )


def mark_job_failed(kind: JobKind, *, tenant_id: uuid.UUID, job_id: uuid.UUID, error: Exception) -> None:
    """The job failed for good: `failed`, with a reason fit for the tenant. An invalid request
    says what was wrong with it; anything else gets a fixed reason and its detail is logged."""
    if isinstance(error, InvalidPayload):
        reason = str(error)
    else:
        reason = INTERNAL_FAILURE_REASON
        logger.error("%s %s failed: %s: %s", kind.endpoint, job_id, type(error).__name__, error)
    with tenant_context(tenant_id):
        kind.model.objects.filter(id=job_id).update(
            status=JobStatus.FAILED, updated_at=Now(), **{kind.model.result_field: {"error": reason}}
        )


def sweep_stale_jobs(*, older_than: datetime.timedelta) -> dict[str, int]:
    """Fail investigations and budget jobs stuck for longer than `older_than`: `running`
    ones whose worker died or gave up, and `pending` ones whose task never got sent."""
    swept = {"investigations": 0, "budget_optimization_jobs": 0}
    failure = {"error": f"timed out: not finished {older_than} after its last update"}
    for tenant_id in selectors.iter_tenant_ids():
        with tenant_context(tenant_id):
            for kind in (INVESTIGATION, BUDGET_OPTIMIZATION):
                model = kind.model
                count = model.objects.filter(
                    status__in=[JobStatus.PENDING, JobStatus.RUNNING], updated_at__lt=Now() - older_than
                ).update(status=JobStatus.FAILED, updated_at=Now(), **{model.result_field: failure})
                swept[model._meta.db_table] += count
                if count:
                    logger.warning(
                        "marked %s stale %s of tenant %s as failed", count, model._meta.db_table, tenant_id
                    )
    return swept
