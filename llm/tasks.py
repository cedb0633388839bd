"""Celery tasks: thin. Validate the payload, call the service, return its result as JSON.

An invalid payload raises InvalidPayload at once: nothing is written and it is not retried.
Transient database errors are retried with the same arguments and task id, so the request_id
(given, or derived from the correlation id or the task id) is the same on every attempt and
the call is recorded once.
"""

import datetime
import uuid

from celery import Task, shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction

from llm import services
from llm.schemas import Endpoint, InvalidPayload, LLMTaskPayload

TASK_NAMES: dict[Endpoint, str] = {
    "route": "llm.route",
    "explanation": "llm.explanation",
    "investigation": "llm.investigation",
    "budget_optimization": "llm.budget_optimization",
}


class LLMTask(Task):
    acks_late = True
    reject_on_worker_lost = True
    autoretry_for = (OperationalError, InterfaceError)
    retry_backoff = True
    retry_backoff_max = 60
    retry_jitter = True
    max_retries = 5
    # Celery builds a repr of every result, up to this length, for its success log line
    # (celery.app.trace stays at WARNING: results carry prompt-derived text) and for events;
    # the default 1,024 costs a per-call task ~30 us of CPU for a string nobody reads.
    resultrepr_maxsize = 100


def _run_stub(task: Task, endpoint: Endpoint, payload: object, force_failure: bool, **job) -> dict:
    parsed = LLMTaskPayload.parse(payload, fallback_correlation_id=task.request.id)
    if job.get("job_id") is not None:
        job["job_id"] = _parse_job_id(job["job_id"])
    result = services.STUB_WORKERS[endpoint](parsed, force_failure=force_failure, **job)
    return result.model_dump(mode="json")


def _parse_job_id(value: object) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise InvalidPayload(f"Invalid job_id {value!r}: not a UUID") from None


@shared_task(base=LLMTask, bind=True, name=TASK_NAMES["route"])
def route(self, payload: dict, force_failure: bool = False) -> dict:
    return _run_stub(self, "route", payload, force_failure)


@shared_task(base=LLMTask, bind=True, name=TASK_NAMES["explanation"])
def explanation(self, payload: dict, force_failure: bool = False) -> dict:
    return _run_stub(self, "explanation", payload, force_failure)


@shared_task(base=LLMTask, bind=True, name=TASK_NAMES["investigation"])
def investigation(self, payload: dict, force_failure: bool = False, job_id: str | None = None) -> dict:
    return _run_stub(self, "investigation", payload, force_failure, job_id=job_id)


@shared_task(base=LLMTask, bind=True, name=TASK_NAMES["budget_optimization"])
def budget_optimization(self, payload: dict, force_failure: bool = False, job_id: str | None = None) -> dict:
    return _run_stub(self, "budget_optimization", payload, force_failure, job_id=job_id)


LLM_TASKS: dict[Endpoint, Task] = {
    "route": route,
    "explanation": explanation,
    "investigation": investigation,
    "budget_optimization": budget_optimization,
}


def task_arguments(
    endpoint: Endpoint,
    payload: LLMTaskPayload,
    *,
    force_failure: bool = False,
    job_id: uuid.UUID | None = None,
) -> dict:
    """JSON-only arguments for an LLM task, with the request_id made explicit."""
    kwargs: dict = {"force_failure": True} if force_failure else {}
    if job_id is not None:
        kwargs["job_id"] = str(job_id)
    return {"args": [payload.for_endpoint(endpoint).model_dump(mode="json")], "kwargs": kwargs}


def enqueue_on_commit(
    endpoint: Endpoint, payload: LLMTaskPayload, *, job_id: uuid.UUID | None = None
) -> None:
    """Send the task once the current transaction commits, so a worker always finds the job
    row it is given. A broker failure then is logged, not raised: the job stays `pending`
    and the stale-job sweeper fails it."""
    arguments = task_arguments(endpoint, payload, job_id=job_id)
    transaction.on_commit(lambda: LLM_TASKS[endpoint].apply_async(**arguments), robust=True)


@shared_task(base=LLMTask, name="llm.reconcile_monthly_costs")
def reconcile_monthly_costs(fix: bool = False) -> dict:
    report = services.reconcile_monthly_costs(fix=fix)
    return {
        "tenants_checked": report.tenants_checked,
        "fixed": report.fixed,
        "drifts": [
            {"tenant_id": str(tenant_id), "month": drift.month.isoformat()}
            for tenant_id, drift in report.drifts
        ],
    }


@shared_task(base=LLMTask, name="llm.sweep_stale_jobs")
def sweep_stale_jobs() -> dict:
    return services.sweep_stale_jobs(
        older_than=datetime.timedelta(seconds=settings.LLM_STALE_JOB_TIMEOUT_SECONDS)
    )


BATCH_TASK_NAME = "llm.record_calls_batch"


def _parse_batch(payloads: object, *, task_id: str | None) -> list[LLMTaskPayload]:
    """Every payload validated as the single-call tasks validate theirs; the first invalid one
    fails the whole batch, by index. A payload without ids gets `<task id>:<index>` as its
    correlation id, which a redelivery of the same message repeats."""
    if not isinstance(payloads, list) or not payloads:
        raise services.InvalidBatch("Invalid batch: payloads must be a non-empty list of LLM task payloads.")
    parsed = []
    for index, payload in enumerate(payloads):
        fallback = f"{task_id}:{index}" if task_id else None
        try:
            parsed.append(LLMTaskPayload.parse(payload, fallback_correlation_id=fallback))
        except InvalidPayload as error:
            raise services.InvalidBatch(f"Invalid batch: payloads[{index}]: {error}") from None
    return parsed


@shared_task(base=LLMTask, bind=True, name=BATCH_TASK_NAME)
def record_calls_batch(self, payloads: list, endpoint: str = "route") -> dict:
    """Many route or explanation calls, of one tenant or several, in one task (see
    services.record_api_calls_batch). A retry or redelivery records nothing twice."""
    parsed = _parse_batch(payloads, task_id=self.request.id)
    return services.record_stub_calls_batch(payloads=parsed, endpoint=endpoint).as_json()
