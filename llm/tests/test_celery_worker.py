"""A real `celery worker` process consuming from a real broker, writing to the test database.

The PostgreSQL transport (the development default) always runs; Redis runs when
CELERY_BROKER_URL names a Redis server (`.ci/run` sets it whenever one answers locally).
"""

import json
import os
import subprocess
import sys
import time

import pytest
from django.conf import settings
from django.db import connection
from django_celery_results.models import TaskResult

from llm import stub_provider
from llm.models import BudgetOptimizationJob, Investigation, JobStatus, LLMApiCall, LLMMonthlyCost
from llm.payloads import LLMTaskPayload
from llm.selectors import current_utc_month
from llm.tasks import LLM_TASKS
from llm.tests.factories import expected_cost_micros, payload_data
from llm.tests.test_tasks import CALL_RECEIPT, JOB_RECEIPT, SECRET, SECRET_PROMPTS
from llm.tests.workers import BROKERS, REDIS_ONLY, REDIS_URL, database_url, send, wait_for_calls
from skeldir.tenancy import tenant_context

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.celery_worker]


def month_totals(tenant) -> tuple[int, int]:
    with tenant_context(tenant.id):
        row = LLMMonthlyCost.objects.get(month=current_utc_month())
        return row.total_calls, row.total_cost_micros


@pytest.mark.parametrize("broker", BROKERS)
def test_a_worker_runs_all_four_tasks_end_to_end(broker, start_worker, tenant_a, tenant_b):
    worker = start_worker(broker)
    payloads = [
        (endpoint, LLMTaskPayload.parse(payload_data(tenant.id, endpoint)))
        for tenant in (tenant_a, tenant_b)
        for endpoint in LLM_TASKS
    ]
    for endpoint, payload in payloads:
        send(broker, endpoint, payload)
    send(broker, "route", payloads[0][1].model_copy(update={"max_cost_cents": 0}))  # refused: over the cap
    send(broker, "explanation", payloads[1][1])  # a duplicate delivery of a call already sent

    for tenant in (tenant_a, tenant_b):
        wait_for_calls(tenant, 4, timeout=60, worker=worker)
        expected_cost = sum(
            expected_cost_micros(stub_provider.usage_for(endpoint, p.prompt))
            for endpoint, p in payloads
            if p.tenant_id == tenant.id
        )
        with tenant_context(tenant.id):
            assert set(LLMApiCall.objects.values_list("endpoint", flat=True)) == set(LLM_TASKS)
            assert Investigation.objects.get().status == JobStatus.COMPLETED
            assert BudgetOptimizationJob.objects.get().status == JobStatus.COMPLETED
        assert month_totals(tenant) == (4, expected_cost)
    worker.wait_for_log("CostLimitExceeded", timeout=30)
    time.sleep(1.5)  # the duplicate had its chance too: still four calls, counted once
    assert month_totals(tenant_a)[0] == 4


@pytest.mark.parametrize("broker", BROKERS)
def test_a_worker_logs_the_broker_kind_and_queues_it_consumes_at_start(broker, start_worker):
    """Which broker a worker consumes, next to /readyz's broker_kind: a web process sending
    elsewhere shows. The kind only: no host, port, user or password."""
    worker = start_worker(broker)
    lines = [json.loads(line) for line in worker.output().splitlines() if line.startswith("{")]
    [line] = [line for line in lines if line["logger"] == "skeldir.celery"]
    kind = "redis" if broker == "redis" else "postgresql (development)"
    message = line["message"].split(" consumes ", 1)[1]  # after the worker's own node name
    assert message.startswith(f"queue(s) llm from the {kind} broker; results: django-db")
    assert "CELERY_BROKER_URL" in message
    db = connection.settings_dict
    for secret in filter(None, (db["USER"], db["PASSWORD"], db["HOST"], str(db["PORT"]), REDIS_URL)):
        assert secret not in message


def test_beat_logs_the_broker_kind_it_sends_to_at_start(tmp_path):
    env = {
        **os.environ,
        "DATABASE_URL": database_url("default"),
        "CELERY_BROKER_URL": REDIS_URL if REDIS_URL.startswith("redis") else "",
    }
    log = tmp_path / "beat.log"
    beat = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "skeldir", "beat", "-s", str(tmp_path / "schedule")],
        cwd=settings.BASE_DIR, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while "skeldir.celery" not in log.read_text():
            assert beat.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
    finally:
        beat.terminate()
        beat.wait(timeout=30)
    kind = "redis" if REDIS_URL.startswith("redis") else "postgresql (development)"
    [line] = [json.loads(line) for line in log.read_text().splitlines() if '"skeldir.celery"' in line]
    assert line["message"].startswith(f"beat sends to the {kind} broker")
    assert connection.settings_dict["USER"] not in line["message"]


@REDIS_ONLY
def test_a_task_interrupted_by_sigkill_is_redelivered_and_counted_once(start_worker, tenant_a):
    # A short visibility timeout and restore sweep, so the test does not wait an hour.
    options = {"CELERY_VISIBILITY_TIMEOUT": "3", "CELERY_UNACKED_RESTORE_INTERVAL": "1"}
    first = start_worker("redis", concurrency=1, **options)
    slow = LLMTaskPayload.parse(
        payload_data(tenant_a.id, prompt={"sleep_ms": 4000, "model": "test-small", "output_tokens": 70})
    )
    quick = [
        LLMTaskPayload.parse(payload_data(tenant_a.id, prompt={"model": "test-small", "output_tokens": cost}))
        for cost in (1, 2, 3)
    ]
    slow_task_id = send("redis", "route", slow)
    first.wait_for_log(f"[{slow_task_id}] received", timeout=30)  # received, now sleeping
    time.sleep(0.5)
    for payload in quick:
        send("redis", "route", payload)
    first.kill()
    with tenant_context(tenant_a.id):
        assert LLMApiCall.objects.count() == 0  # killed mid-task, before recording anything

    second = start_worker("redis", concurrency=2, **options)
    wait_for_calls(tenant_a, 4, timeout=60, worker=second)
    assert month_totals(tenant_a) == (4, 70 + 1 + 2 + 3)
    with tenant_context(tenant_a.id):
        assert LLMApiCall.objects.filter(request_id=slow.request_id_for("route")).count() == 1


@pytest.mark.parametrize(
    "broker", [pytest.param("redis" if REDIS_URL.startswith("redis") else "postgres", id="configured-broker")]
)
def test_an_api_job_goes_pending_running_completed_through_a_real_worker(
    broker, start_worker, api_client, tenant_a
):
    """The API sends on the broker this process is configured with (Redis in CI, else the
    test database's queue tables); a real worker takes the job to completion."""
    worker = start_worker(broker)
    client = api_client(tenant_a)
    accepted = client.post(
        "/api/llm/investigations", {"question": "Why is Meta Ads up?"}, content_type="application/json"
    ).json()
    deadline = time.monotonic() + 60
    while (job := client.get(accepted["status_url"]).json())["status"] in {"pending", "running"}:
        assert time.monotonic() < deadline, (
            f"job still {job['status']}; worker log:\n{worker.output()[-3000:]}"
        )
        time.sleep(0.3)
    assert job["status"] == "completed"
    assert job["result"]["question"] == "Why is Meta Ads up?"
    assert month_totals(tenant_a) == (1, job["cost_micros"])


def test_the_result_backend_stores_ids_and_status_only(start_worker, tenant_a):
    """django-celery-results' table is not tenant-sealed: what a real worker stores there for
    each LLM task (its result, and its arguments with extended results) holds no prompt text
    and no cost, only the call's ids and status."""
    worker = start_worker("postgres")  # with CELERY_RESULT_BACKEND=django-db
    task_ids = {
        send(
            "postgres", endpoint, LLMTaskPayload.parse(payload_data(tenant_a.id, endpoint, prompt=prompt))
        ): endpoint
        for endpoint, prompt in SECRET_PROMPTS.items()
    }
    wait_for_calls(tenant_a, 4, timeout=60, worker=worker)
    deadline = time.monotonic() + 30
    while TaskResult.objects.filter(task_id__in=task_ids, status="SUCCESS").count() < 4:
        assert time.monotonic() < deadline, worker.output()[-3000:]
        time.sleep(0.2)
    with tenant_context(tenant_a.id):
        costs = set(LLMApiCall.objects.values_list("cost_micros", flat=True))
    for row in TaskResult.objects.filter(task_id__in=task_ids).values():
        stored = json.dumps(row, default=str)
        assert SECRET not in stored
        result = json.loads(row["result"])
        endpoint = task_ids[row["task_id"]]
        assert set(result) == (
            JOB_RECEIPT if endpoint in ("investigation", "budget_optimization") else CALL_RECEIPT
        )
        assert not any("cost" in key for key in result)
        assert not costs & {value for value in result.values() if type(value) is int}
