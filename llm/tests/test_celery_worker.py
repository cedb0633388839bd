"""A real `celery worker` process consuming from a real broker, writing to the test database.

The PostgreSQL transport (the development default) always runs; Redis runs when
CELERY_BROKER_URL names a Redis server (`.ci/run` sets it whenever one answers locally).
"""

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection, connections
from kombu import Connection
from kombu.transport.sqlalchemy import Channel as SQLAlchemyChannel

from llm import stub_provider
from llm.models import BudgetOptimizationJob, Investigation, JobStatus, LLMApiCall, LLMMonthlyCost
from llm.schemas import LLMTaskPayload
from llm.selectors import current_utc_month
from llm.tasks import LLM_TASKS, task_arguments
from llm.tests.factories import payload_data
from skeldir.celery_broker import broker_url_for_database
from skeldir.tenancy import tenant_context

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.celery_worker]

BASE_DIR = Path(settings.BASE_DIR)
REDIS_URL = os.environ.get("CELERY_BROKER_URL", "")
REDIS_ONLY = pytest.mark.skipif(
    not REDIS_URL.startswith("redis"), reason="CELERY_BROKER_URL does not name a Redis server"
)
BROKERS = [
    pytest.param("postgres", id="postgresql-transport"),
    pytest.param("redis", id="redis", marks=REDIS_ONLY),
]


def database_url(alias: str) -> str:
    db = connections[alias].settings_dict  # NAME is the test database's by now
    user = quote(db["USER"], safe="")
    password = f":{quote(db['PASSWORD'], safe='')}" if db.get("PASSWORD") else ""
    return (
        f"postgresql://{user}{password}@{quote(db['HOST'] or '', safe='')}:{db['PORT'] or 5432}/{db['NAME']}"
    )


def broker_url(broker: str) -> str:
    return REDIS_URL if broker == "redis" else broker_url_for_database(connection.settings_dict)


class Worker:
    """`celery -A skeldir worker -Q llm` in its own process group, logging to a file."""

    def __init__(self, broker: str, log_dir: Path, concurrency: int = 2, **extra_env: str):
        env = {
            **os.environ,
            "DATABASE_URL": database_url("default"),
            "DATABASE_OWNER_URL": database_url("owner"),
            "CELERY_RESULT_BACKEND": "django-db",
            **extra_env,
        }
        env.pop("CELERY_BROKER_URL", None)
        if broker == "redis":
            env["CELERY_BROKER_URL"] = REDIS_URL
        self.log = log_dir / f"worker-{uuid.uuid4().hex[:8]}.log"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "skeldir", "worker", "-Q", "llm",
             "-c", str(concurrency), "--without-gossip", "--without-mingle", "--without-heartbeat",
             "-n", f"test-{uuid.uuid4().hex[:8]}@%h", "--loglevel", "INFO"],
            cwd=BASE_DIR, env=env, stdout=self.log.open("w"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self.wait_for_log("ready.", timeout=60)

    def output(self) -> str:
        return self.log.read_text()

    def wait_for_log(self, text: str, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"worker never logged {text!r}:\n{self.output()[-4000:]}")
            time.sleep(0.1)

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def start_worker(tmp_path):
    workers = []

    def start(broker: str, **kwargs) -> Worker:
        workers.append(Worker(broker, tmp_path, **kwargs))
        return workers[-1]

    yield start
    for worker in workers:
        worker.stop()
    # kombu keeps an SQLAlchemy engine per broker URL; its pooled connection to the test
    # database would stop the test runner from dropping it.
    for engine, _ in SQLAlchemyChannel._engines.values():
        engine.dispose()


def send(broker: str, endpoint: str, payload: LLMTaskPayload) -> str:
    """Publish one task on the test's broker; returns the task id."""
    with Connection(broker_url(broker)) as conn:
        return LLM_TASKS[endpoint].apply_async(**task_arguments(endpoint, payload), connection=conn).id


def wait_for_calls(tenant, expected: int, *, timeout: float, worker: Worker) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with tenant_context(tenant.id):
            count = LLMApiCall.objects.count()
        if count >= expected or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert count == expected, f"{count} of {expected} calls recorded; worker log:\n{worker.output()[-4000:]}"


def month_totals(tenant) -> tuple[int, int]:
    with tenant_context(tenant.id):
        row = LLMMonthlyCost.objects.get(month=current_utc_month())
        return row.total_calls, row.total_cost_cents


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
            stub_provider.usage_for(endpoint, p.prompt).cost_cents
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


@REDIS_ONLY
def test_a_task_interrupted_by_sigkill_is_redelivered_and_counted_once(start_worker, tenant_a):
    # A short visibility timeout and restore sweep, so the test does not wait an hour.
    options = {"CELERY_VISIBILITY_TIMEOUT": "3", "CELERY_UNACKED_RESTORE_INTERVAL": "1"}
    first = start_worker("redis", concurrency=1, **options)
    slow = LLMTaskPayload.parse(
        payload_data(tenant_a.id, prompt={"sleep_ms": 4000, "simulated_cost_cents": 70})
    )
    quick = [
        LLMTaskPayload.parse(payload_data(tenant_a.id, prompt={"simulated_cost_cents": cost}))
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
    assert month_totals(tenant_a) == (1, job["cost_cents"])
