"""Celery tasks: thin. The task base validates the payload once and names the run in the log;
each task calls its service and returns only the call's ids and status as JSON
(`llm.payloads.task_receipt`): a result backend stores what a task returns, outside the
tenant's rows, so never the prompt-derived output or the cost.

An invalid payload raises InvalidPayload at once: nothing is written and it is not retried.
Transient database errors are retried with the same arguments and task id, so the request_id
(given, or derived from the correlation id or the task id) is the same on every attempt and
the call is recorded once.
"""

import datetime
import uuid
from contextlib import suppress

from celery import Task, shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError

from llm import services
from llm.payloads import TASK_NAMES, Endpoint, InvalidPayload, LLMTaskPayload, task_receipt
from skeldir.logs import bind_log_context
from skeldir.tenancy import parse_tenant_id


class LLMTask(Task):
    """Delivery options of every LLM task, and, for the tasks that take one LLM payload
    (`endpoint` set), that payload validated once before the task body runs."""

    acks_late = True
    reject_on_worker_lost = True
    autoretry_for = (OperationalError, InterfaceError)
    retry_backoff = True
    retry_backoff_max = 60
    retry_jitter = True
    max_retries = 5
    # Celery builds a repr of every result, up to this length, for its success log line
    # (celery.app.trace stays at WARNING) and for events; the default 1,024 costs a per-call
    # task ~30 us of CPU for a string nobody reads.
    resultrepr_maxsize = 100
    # Expected outcomes, logged by Celery at INFO without a traceback rather than as errors: a
    # failure asked for (`force_failure`), and a call the tenant's budget blocked.
    throws = (services.ForcedFailure, services.BudgetExceeded)

    endpoint: Endpoint | None = None

    def __call__(self, *args, **kwargs):
        if self.endpoint is None:
            return self.run(*args, **kwargs)
        payload, *rest = args
        parsed = self.parse_payload(payload)
        return self.run(parsed, *rest, **kwargs)

    def parse_payload(self, payload: object) -> LLMTaskPayload:
        """The payload validated, its ids bound to the run's log lines (the task_postrun
        handler in skeldir.logs restores the context afterwards). A payload without ids uses
        the task id, which a redelivery repeats, as its correlation id."""
        try:
            parsed = LLMTaskPayload.parse(payload, fallback_correlation_id=self.request.id)
        except InvalidPayload:
            if isinstance(payload, dict):  # name the tenant in the log, when it is well-formed
                with suppress(ValueError):
                    bind_log_context(tenant_id=parse_tenant_id(payload.get("tenant_id")))
            raise
        bind_log_context(
            tenant_id=parsed.tenant_id,
            correlation_id=parsed.correlation_id,
            request_id=parsed.request_id_for(self.endpoint),
        )
        return parsed


def _job_id(value: object) -> uuid.UUID | None:
    if value is None:
        return None
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise InvalidPayload(f"Invalid job_id {value!r}: not a UUID") from None


@shared_task(base=LLMTask, name=TASK_NAMES["route"], endpoint="route")
def route(payload: LLMTaskPayload, force_failure: bool = False) -> dict:
    return task_receipt(services.route_request(payload, force_failure=force_failure))


@shared_task(base=LLMTask, name=TASK_NAMES["explanation"], endpoint="explanation")
def explanation(payload: LLMTaskPayload, force_failure: bool = False) -> dict:
    return task_receipt(services.generate_explanation(payload, force_failure=force_failure))


@shared_task(base=LLMTask, name=TASK_NAMES["investigation"], endpoint="investigation")
def investigation(payload: LLMTaskPayload, force_failure: bool = False, job_id: str | None = None) -> dict:
    result = services.run_investigation(payload, force_failure=force_failure, job_id=_job_id(job_id))
    return task_receipt(result)


@shared_task(base=LLMTask, name=TASK_NAMES["budget_optimization"], endpoint="budget_optimization")
def budget_optimization(
    payload: LLMTaskPayload, force_failure: bool = False, job_id: str | None = None
) -> dict:
    result = services.optimize_budget(payload, force_failure=force_failure, job_id=_job_id(job_id))
    return task_receipt(result)


LLM_TASKS: dict[Endpoint, Task] = {
    "route": route,
    "explanation": explanation,
    "investigation": investigation,
    "budget_optimization": budget_optimization,
}


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
        "budget_drifts": [
            {"tenant_id": str(tenant_id), "period": drift.period, "start": drift.period_start.isoformat()}
            for tenant_id, drift in report.budget_drifts
        ],
    }


@shared_task(base=LLMTask, name="llm.sweep_stale_jobs")
def sweep_stale_jobs() -> dict:
    return services.sweep_stale_jobs(
        older_than=datetime.timedelta(seconds=settings.LLM_STALE_JOB_TIMEOUT_SECONDS)
    )


@shared_task(base=LLMTask, name="llm.sweep_budget_reservations")
def sweep_budget_reservations() -> dict:
    return services.sweep_expired_reservations()


class AlertDeliveryTask(LLMTask):
    """A failed delivery attempt is retried up to 10 times, each after a random wait of up to
    5 s x 2^retry, at most 10 minutes (full jitter: many alerts failing at once do not retry
    together): about 40 minutes at the most. Beat re-sends a delivery still pending
    LLM_ALERT_RESEND_AFTER_SECONDS after its last attempt."""

    autoretry_for = (*LLMTask.autoretry_for, services.DeliveryFailed)
    retry_backoff = 5
    retry_backoff_max = 600
    max_retries = 10


@shared_task(base=AlertDeliveryTask, name=services.DELIVER_ALERT_TASK_NAME)
def deliver_budget_alert(tenant_id: str, delivery_id: str) -> dict:
    delivered = services.deliver_alert(
        tenant_id=parse_tenant_id(tenant_id), delivery_id=uuid.UUID(delivery_id)
    )
    return {"delivery_id": delivery_id, "delivered": delivered}


@shared_task(base=LLMTask, name="llm.resend_budget_alerts")
def resend_budget_alerts() -> dict:
    older_than = datetime.timedelta(seconds=settings.LLM_ALERT_RESEND_AFTER_SECONDS)
    return {"sent": services.resend_pending_deliveries(older_than=older_than)}


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
    services.record_api_calls_batch). A retry or redelivery records nothing twice. Returns
    counts only (no cost: see task_receipt)."""
    parsed = _parse_batch(payloads, task_id=self.request.id)
    return services.record_stub_calls_batch(payloads=parsed, endpoint=endpoint).as_json()
