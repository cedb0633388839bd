"""The Celery tasks through Celery's own execution path (`apply`): names, routing, options,
JSON results, and invalid payloads failing at once without retries or writes."""

import json

import pytest
from celery.signals import task_prerun
from django.conf import settings
from django.db import OperationalError

from llm import services, tasks
from llm.models import BudgetOptimizationJob, Investigation, LLMApiCall
from llm.payloads import InvalidPayload, LLMTaskPayload, task_arguments
from llm.tests.factories import payload_data
from skeldir.celery import app
from skeldir.tenancy import tenant_context

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_four_tasks_have_stable_names_on_the_llm_queue():
    assert {endpoint: task.name for endpoint, task in tasks.LLM_TASKS.items()} == {
        "route": "llm.route",
        "explanation": "llm.explanation",
        "investigation": "llm.investigation",
        "budget_optimization": "llm.budget_optimization",
    }
    for name in [*tasks.TASK_NAMES.values(), "llm.reconcile_monthly_costs", "llm.sweep_stale_jobs"]:
        assert name in app.tasks
        assert app.amqp.router.route({}, name)["queue"].name == "llm"


def test_tasks_are_configured_for_at_least_once_delivery():
    for task in tasks.LLM_TASKS.values():
        assert task.acks_late is True
        assert task.reject_on_worker_lost is True
        assert OperationalError in task.autoretry_for
        assert InvalidPayload not in task.autoretry_for
    assert app.conf.worker_prefetch_multiplier == 1
    assert app.conf.task_serializer == "json"
    assert app.conf.accept_content == ["json"]
    assert app.conf.task_time_limit > app.conf.task_soft_time_limit > 0


SECRET = "PROMPT-SECRET-2b7e"
# Prompts whose derived output (route, explanation, investigation result, recommendations)
# carries the secret, were it returned.
SECRET_PROMPTS = {
    "route": {"request": f"Why is {SECRET} down?"},
    "explanation": {"metric": SECRET, "channel": "google_ads"},
    "investigation": {"question": f"Why is {SECRET} underperforming?"},
    "budget_optimization": {"total_budget_cents": 100_000, "channels": {SECRET: 3, "email": 1}},
}
CALL_RECEIPT = {"tenant_id", "endpoint", "request_id", "correlation_id", "api_call_id", "recorded"}
JOB_RECEIPT = CALL_RECEIPT | {"job_id", "status"}


@pytest.mark.parametrize("endpoint", list(tasks.LLM_TASKS))
def test_each_task_records_its_call_and_returns_ids_and_status_only(endpoint, tenant_a):
    """What a task returns is what the result backend stores, outside the tenant's rows: ids
    and status, never prompt-derived text or the cost (the service's result has them)."""
    payload = LLMTaskPayload.parse(payload_data(tenant_a.id, endpoint, prompt=SECRET_PROMPTS[endpoint]))
    result = tasks.LLM_TASKS[endpoint].apply(**task_arguments(endpoint, payload))
    assert result.successful(), result.traceback
    receipt = result.result
    is_job = endpoint in ("investigation", "budget_optimization")
    assert set(receipt) == (JOB_RECEIPT if is_job else CALL_RECEIPT)
    assert SECRET not in json.dumps(receipt)
    assert not any("cost" in key for key in receipt)
    assert receipt["request_id"] == payload.request_id_for(endpoint)
    assert (receipt["tenant_id"], receipt["endpoint"]) == (str(tenant_a.id), endpoint)
    assert receipt["correlation_id"] == payload.correlation_id
    assert receipt["recorded"] is True
    with tenant_context(tenant_a.id):
        call = LLMApiCall.objects.get(endpoint=endpoint)
        assert str(call.id) == receipt["api_call_id"]
        if is_job:
            job = (Investigation if endpoint == "investigation" else BudgetOptimizationJob).objects.get()
            assert (receipt["job_id"], receipt["status"]) == (str(job.id), "completed")
    # The service itself still returns the whole result.
    full = services.STUB_WORKERS[endpoint](payload)
    assert full.cost_cents == call.cost_cents
    assert set(type(full).model_fields) - JOB_RECEIPT - {"investigation_id"} > {"cost_cents", "model"}


def test_a_payload_without_ids_records_once_per_task_id(tenant_a):
    data = payload_data(tenant_a.id, "route")
    del data["correlation_id"]
    first = tasks.route.apply(args=[data], task_id="delivery-1")
    again = tasks.route.apply(args=[data], task_id="delivery-1")  # the same message redelivered
    assert (first.result["recorded"], again.result["recorded"]) == (True, False)
    with tenant_context(tenant_a.id):
        assert LLMApiCall.objects.count() == 1


@pytest.mark.parametrize(
    "bad",
    [
        {"prompt": {}, "max_cost_cents": 1},
        {"tenant_id": "nope", "prompt": {}, "max_cost_cents": 1},
        {"tenant_id": "00000000-0000-4000-8000-000000000000", "prompt": {}, "max_cost_cents": -3},
        {"tenant_id": "00000000-0000-4000-8000-000000000000", "prompt": "text", "max_cost_cents": 1},
        {"tenant_id": "00000000-0000-4000-8000-000000000000", "prompt": {}, "max_cost_cents": 1, "x": 1},
        "not a dict",
    ],
)
def test_invalid_payloads_fail_at_once_and_are_not_retried(bad, tenant_a):
    runs = []

    def count_run(sender=None, task_id=None, **kwargs):
        runs.append(task_id)

    task_prerun.connect(count_run, sender=tasks.explanation, weak=False)
    try:
        result = tasks.explanation.apply(args=[bad])
    finally:
        task_prerun.disconnect(count_run, sender=tasks.explanation)
    assert result.failed()
    assert isinstance(result.result, InvalidPayload)
    assert "Invalid LLM task payload" in str(result.result)
    assert runs == [result.id]  # one run: a retry would have run it again
    with tenant_context(tenant_a.id):
        assert LLMApiCall.objects.count() == 0


def test_an_unknown_tenant_fails_the_task_with_a_clear_error():
    result = tasks.route.apply(args=[payload_data("00000000-0000-4000-8000-000000000000")])
    assert result.failed()
    assert "Unknown tenant" in str(result.result)


def test_the_beat_schedule_runs_reconciliation_the_sweepers_and_alert_resends():
    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert scheduled == {
        "llm.reconcile_monthly_costs",
        "llm.sweep_stale_jobs",
        "llm.sweep_budget_reservations",
        "llm.resend_budget_alerts",
    }
    for entry in settings.CELERY_BEAT_SCHEDULE.values():
        assert entry["task"] in app.tasks
        assert entry["schedule"] > 0
