"""The four stub LLM workers: route, explanation, investigation, budget optimization.

Each makes one (stub) provider call and records it as one unit of work in one transaction
inside the payload's tenant: the call row, its cost added to the month, and, for the job
kinds, the job row completed. A failure anywhere rolls back all of it.
"""

import dataclasses
import time
import uuid
from dataclasses import dataclass
from typing import TypeVar

from django.db import InterfaceError, OperationalError
from pydantic import BaseModel, ValidationError

from llm import metrics, prices, stub_provider
from llm.models import LLMJob
from llm.money import MICROS_PER_CENT, format_micros
from llm.payloads import (
    BudgetOptimizationResult,
    Endpoint,
    ExplanationResult,
    InvalidPayload,
    InvestigationResult,
    LLMTaskPayload,
    RouteResult,
    StubPromptOptions,
)
from llm.services import budgets, jobs, settlement
from llm.services.accounting import RecordedCall, call_transaction, record_api_call, record_monthly_costs
from llm.services.errors import CostLimitExceeded, ForcedFailure
from llm.stub_provider import LLMUsage

PromptT = TypeVar("PromptT", bound=BaseModel)

# Errors worth a retry: the task retries with the same request_id, so nothing is counted twice.
TRANSIENT_DATABASE_ERRORS = (OperationalError, InterfaceError)


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
            "price_id": self.call.price_id,
            "input_tokens": self.usage.input_tokens,
            "cached_input_tokens": self.usage.cached_input_tokens,
            "output_tokens": self.usage.output_tokens,
            "cost_micros": self.call.cost_micros,
            "cost_cents": self.call.cost_cents,
            "latency_ms": self.usage.latency_ms,
        }


def parse_prompt(contract: type[PromptT], prompt: dict) -> PromptT:
    try:
        return contract.model_validate(prompt)
    except ValidationError as error:
        raise InvalidPayload.from_validation_error(error, what="prompt") from None


def stub_usage(payload: LLMTaskPayload, endpoint: Endpoint) -> tuple[LLMUsage, StubPromptOptions]:
    """The stub's usage for this payload, its model priced and its worst-case cost (no
    cached tokens) within the payload's cap; writes nothing."""
    options = parse_prompt(StubPromptOptions, payload.prompt)
    usage = stub_provider.usage_for(
        endpoint, payload.prompt, model=options.model, output_tokens=options.output_tokens
    )
    try:
        price = prices.price_in_force(usage.model)
    except prices.NoPriceInForce as error:
        raise prices.NoPriceInForce(str(error), fields={"prompt.model": str(error)}) from None
    estimate = prices.call_cost_micros(
        price=price, input_tokens=usage.input_tokens, cached_input_tokens=0, output_tokens=usage.output_tokens
    )
    if estimate > payload.max_cost_cents * MICROS_PER_CENT:
        raise CostLimitExceeded(
            f"The {endpoint} call could cost {format_micros(estimate)}, over max_cost_cents "
            f"{payload.max_cost_cents}; nothing was recorded.",
            fields={"max_cost_cents": f"the call could cost {format_micros(estimate)}"},
        )
    return usage, options


def wait_for_provider(options: StubPromptOptions) -> None:
    """The provider's time: outside any transaction, as a real provider call must be (no locks
    or connection held meanwhile)."""
    if options.sleep_ms:
        time.sleep(options.sleep_ms / 1000)


def _record_call(
    payload: LLMTaskPayload, endpoint: Endpoint, request_id: str, usage: LLMUsage, *, force_failure: bool
) -> RecordedCall:
    """Inside the call's transaction: its row and, if it is new, its cost in the month."""
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
            cost_micros=call.cost_micros,
            calls=1,
        )
    metrics.observe_stub_call(endpoint=endpoint, model=usage.model, call=call)
    return call


def _make_call(
    payload: LLMTaskPayload,
    endpoint: Endpoint,
    *,
    force_failure: bool,
    job: tuple[jobs.JobKind, BaseModel, uuid.UUID | None] | None = None,
) -> tuple[StubCall, LLMJob | None]:
    """One call's unit of work, for every kind (`job`: the kind, its validated prompt and the
    API's job id). Its transactions, each needed:

    1. Admission (budgets.admit_call): the reservation commits before the provider is called,
       so concurrent calls see it. A tenant without a budget only reads that it has none.
    2. The call row, its month, its reservation settled and, for a job, the job row
       completed: all or nothing.
    3. Only when the work failed for good (2 rolled back): the reservation released.
    Transient database errors keep the reservation for the task's retry (or the lease sweep).
    """
    usage, options = stub_usage(payload, endpoint)
    request_id = payload.request_id_for(endpoint)
    admission = budgets.admit_call(
        tenant_id=payload.tenant_id, request_id=request_id, endpoint=endpoint, usage=usage
    )
    if admission is not None and admission.model != usage.model:  # a fallback was admitted
        usage = dataclasses.replace(usage, model=admission.model)
    try:
        wait_for_provider(options)
        with call_transaction(payload.tenant_id):
            call = _record_call(payload, endpoint, request_id, usage, force_failure=force_failure)
            settlement.settle_call(
                tenant_id=payload.tenant_id,
                request_id=request_id,
                endpoint=endpoint,
                call=call,
                admission=admission,
            )
            saved_job = None
            if job is not None:
                kind, prompt, job_id = job
                saved_job = jobs.save_completed_job(
                    kind,
                    tenant_id=payload.tenant_id,
                    job_id=job_id,
                    request_id=request_id,
                    recorded_before=not call.created,
                    fields={
                        **kind.outcome(prompt),
                        "cost_micros": call.cost_micros,
                        "cost_cents": call.cost_cents,
                    },
                )
    except TRANSIENT_DATABASE_ERRORS:
        raise
    except Exception:
        if admission is not None:
            settlement.release_call(tenant_id=payload.tenant_id, request_id=request_id, endpoint=endpoint)
        raise
    return StubCall(payload, endpoint, request_id, usage, call), saved_job


def _run_job(
    kind: jobs.JobKind, payload: LLMTaskPayload, *, job_id: uuid.UUID | None, force_failure: bool
) -> tuple[StubCall, LLMJob]:
    """A job's unit of work: the call's (`_make_call`), between two more transactions when the
    API created the job `pending` (`job_id`): marked `running` first, committed before the
    provider call so that a client polling it sees it; and `failed` with the reason if the work
    fails for good. Transient database errors leave it `running` for the task's retry, or in
    the end for the stale-job sweeper."""
    if job_id is not None:
        jobs.mark_job_running(kind, tenant_id=payload.tenant_id, job_id=job_id)
    try:
        prompt = parse_prompt(kind.prompt, payload.prompt)
        return _make_call(payload, kind.endpoint, force_failure=force_failure, job=(kind, prompt, job_id))
    except TRANSIENT_DATABASE_ERRORS:
        raise
    except Exception as error:
        if job_id is not None:
            jobs.mark_job_failed(kind, tenant_id=payload.tenant_id, job_id=job_id, error=error)
        raise


def route_request(payload: LLMTaskPayload, *, force_failure: bool = False) -> RouteResult:
    stub, _ = _make_call(payload, "route", force_failure=force_failure)
    return RouteResult(**stub.receipt(), route=stub_provider.route_for(payload.prompt))


def generate_explanation(payload: LLMTaskPayload, *, force_failure: bool = False) -> ExplanationResult:
    stub, _ = _make_call(payload, "explanation", force_failure=force_failure)
    return ExplanationResult(**stub.receipt(), explanation=stub_provider.explanation_for(payload.prompt))


def run_investigation(
    payload: LLMTaskPayload, *, force_failure: bool = False, job_id: uuid.UUID | None = None
) -> InvestigationResult:
    stub, job = _run_job(jobs.INVESTIGATION, payload, job_id=job_id, force_failure=force_failure)
    return InvestigationResult(
        **stub.receipt(), investigation_id=job.id, status=job.status, result=job.result
    )


def optimize_budget(
    payload: LLMTaskPayload, *, force_failure: bool = False, job_id: uuid.UUID | None = None
) -> BudgetOptimizationResult:
    stub, job = _run_job(jobs.BUDGET_OPTIMIZATION, payload, job_id=job_id, force_failure=force_failure)
    return BudgetOptimizationResult(
        **stub.receipt(), job_id=job.id, status=job.status, recommendations=job.recommendations
    )


STUB_WORKERS = {
    "route": route_request,
    "explanation": generate_explanation,
    "investigation": run_investigation,
    "budget_optimization": optimize_budget,
}
