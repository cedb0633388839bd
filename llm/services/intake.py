"""Accepting LLM work from the API: checked against the contract the worker applies, admitted
under the tenant's budget in the request's transaction (its reservation, which the worker
then finds, or BudgetExceeded with the BLOCK decision), then sent to the worker once that
transaction commits (with its job row, for the job kinds). What is accepted here cannot fail
validation later in the worker."""

import uuid
from collections.abc import Mapping

from llm.models import BudgetOptimizationJob, Investigation, LLMJob
from llm.payloads import Endpoint, LLMTaskPayload
from llm.services import jobs
from llm.services.budgets import admit_call
from llm.services.dispatch import enqueue_on_commit
from llm.services.workers import parse_prompt, stub_usage
from skeldir.tenancy import tenant_context


def _checked_payload(
    endpoint: Endpoint, *, tenant_id: uuid.UUID, request_id: str | None, prompt: dict, max_cost_cents: int
) -> LLMTaskPayload:
    """The task's payload, or InvalidPayload for anything its worker would refuse: the
    payload contract, the kind's prompt contract, the model and the cost cap. Writes nothing."""
    payload = LLMTaskPayload.parse(
        {
            "tenant_id": tenant_id,
            "request_id": request_id or str(uuid.uuid4()),
            "prompt": prompt,
            "max_cost_cents": max_cost_cents,
        }
    )
    if kind := jobs.JOB_KINDS.get(endpoint):
        parse_prompt(kind.prompt, payload.prompt)
    usage, _ = stub_usage(payload, endpoint)
    admit_call(tenant_id=tenant_id, request_id=payload.request_id, endpoint=endpoint, usage=usage)
    return payload


def request_llm_call(
    *, tenant_id: uuid.UUID, endpoint: Endpoint, prompt: dict, request_id: str | None, max_cost_cents: int
) -> str:
    """Send a route or explanation task once the transaction commits; returns its request_id.
    A repeated request_id is sent again and recorded once."""
    payload = _checked_payload(
        endpoint, tenant_id=tenant_id, request_id=request_id, prompt=prompt, max_cost_cents=max_cost_cents
    )
    with tenant_context(tenant_id):
        enqueue_on_commit(endpoint, payload)
    return payload.request_id


def start_job(
    kind: jobs.JobKind,
    *,
    tenant_id: uuid.UUID,
    request_id: str | None,
    prompt: dict,
    max_cost_cents: int,
    fields: Mapping[str, object] | None = None,
) -> LLMJob:
    """Create the `pending` job and send its task once the transaction commits.

    The same request_id (a client's Idempotency-Key) finds the job it created before and
    sends nothing again.
    """
    payload = _checked_payload(
        kind.endpoint,
        tenant_id=tenant_id,
        request_id=request_id,
        prompt=prompt,
        max_cost_cents=max_cost_cents,
    )
    with tenant_context(tenant_id):
        job, created = kind.model.objects.get_or_create(
            request_id=payload.request_id, defaults={"tenant_id": tenant_id, **(fields or {})}
        )
        if created:
            enqueue_on_commit(kind.endpoint, payload, job_id=job.id)
    return job


def start_investigation(
    *, tenant_id: uuid.UUID, question: str, request_id: str | None, max_cost_cents: int
) -> Investigation:
    return start_job(
        jobs.INVESTIGATION,
        tenant_id=tenant_id,
        request_id=request_id,
        prompt={"question": question},
        max_cost_cents=max_cost_cents,
        fields={"query": question},
    )


def start_budget_optimization(
    *,
    tenant_id: uuid.UUID,
    total_budget_cents: int,
    channels: Mapping[str, float],
    request_id: str | None,
    max_cost_cents: int,
) -> BudgetOptimizationJob:
    return start_job(
        jobs.BUDGET_OPTIMIZATION,
        tenant_id=tenant_id,
        request_id=request_id,
        prompt={"total_budget_cents": total_budget_cents, "channels": dict(channels)},
        max_cost_cents=max_cost_cents,
    )
