"""Celery tasks: thin. Validate the payload, call the service, return its result as JSON.

An invalid payload raises InvalidPayload at once: nothing is written and it is not retried.
Transient database errors are retried with the same arguments and task id, so the request_id
(given, or derived from the correlation id or the task id) is the same on every attempt and
the call is recorded once.
"""

import datetime

from celery import Task, shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError

from llm import services
from llm.schemas import Endpoint, LLMTaskPayload

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


def _run_stub(task: Task, endpoint: Endpoint, payload: object, force_failure: bool) -> dict:
    parsed = LLMTaskPayload.parse(payload, fallback_correlation_id=task.request.id)
    result = services.STUB_WORKERS[endpoint](parsed, force_failure=force_failure)
    return result.model_dump(mode="json")


@shared_task(base=LLMTask, bind=True, name=TASK_NAMES["route"])
def route(self, payload: dict, force_failure: bool = False) -> dict:
    return _run_stub(self, "route", payload, force_failure)


@shared_task(base=LLMTask, bind=True, name=TASK_NAMES["explanation"])
def explanation(self, payload: dict, force_failure: bool = False) -> dict:
    return _run_stub(self, "explanation", payload, force_failure)


@shared_task(base=LLMTask, bind=True, name=TASK_NAMES["investigation"])
def investigation(self, payload: dict, force_failure: bool = False) -> dict:
    return _run_stub(self, "investigation", payload, force_failure)


@shared_task(base=LLMTask, bind=True, name=TASK_NAMES["budget_optimization"])
def budget_optimization(self, payload: dict, force_failure: bool = False) -> dict:
    return _run_stub(self, "budget_optimization", payload, force_failure)


LLM_TASKS: dict[Endpoint, Task] = {
    "route": route,
    "explanation": explanation,
    "investigation": investigation,
    "budget_optimization": budget_optimization,
}


def task_arguments(endpoint: Endpoint, payload: LLMTaskPayload, *, force_failure: bool = False) -> dict:
    """JSON-only arguments for an LLM task, with the request_id made explicit."""
    kwargs = {"force_failure": True} if force_failure else {}
    return {"args": [payload.for_endpoint(endpoint).model_dump(mode="json")], "kwargs": kwargs}


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
