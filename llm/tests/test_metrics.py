"""Prometheus metrics: /metrics exposes the counters and they move when a stub call is
recorded; task outcomes, durations and validation rejections; no tenant or request id in any
label; and a real prefork worker in multiprocess mode serving its children's metrics (its
JSON log checked on the way)."""

import json
import os
import urllib.request
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from llm import metrics, services, stub_provider, tasks
from llm.models import LLMMonthlyCost
from llm.payloads import LLMTaskPayload
from llm.tests.factories import create_tenant_row, expected_cost_micros, payload_data
from llm.tests.workers import REDIS_URL, free_port, send, wait_for_calls

pytestmark = pytest.mark.django_db(transaction=True)

COUNTERS = [
    "skeldir_llm_reconciliation_drifts",
    "skeldir_llm_calls_recorded",
    "skeldir_llm_cost_micros",
    "skeldir_llm_calls_deduplicated",
    "skeldir_celery_tasks",
    "skeldir_llm_validation_rejections",
]
ALLOWED_LABELS = {"endpoint", "model", "task", "outcome", "source", "reason", "le"}


def parse(text: str) -> dict[tuple[str, frozenset], float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def scrape(client) -> dict[tuple[str, frozenset], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    return parse(response.content.decode())


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_exposes_every_counter_and_histogram(client):
    text = client.get("/metrics").content.decode()
    for name in COUNTERS:
        assert f"# TYPE {name}_total counter" in text, name
    assert "# TYPE skeldir_celery_task_duration_seconds histogram" in text


def test_the_counters_move_when_a_stub_call_is_recorded(client, tenant_a):
    before = scrape(client)
    payload = LLMTaskPayload.parse(
        payload_data(tenant_a.id, "route", prompt={"x": "y", "model": "stub-large"})
    )
    receipt = services.route_request(payload)
    services.route_request(payload)  # the same request again: deduplicated, not recorded
    after = scrape(client)
    labels = {"endpoint": "route", "model": "stub-large"}
    assert (
        value(after, "skeldir_llm_calls_recorded_total", **labels)
        - value(before, "skeldir_llm_calls_recorded_total", **labels)
        == 1
    )
    assert (
        value(after, "skeldir_llm_cost_micros_total", **labels)
        - value(before, "skeldir_llm_cost_micros_total", **labels)
        == receipt.cost_micros
        > 0
    )
    assert (
        value(after, "skeldir_llm_calls_deduplicated_total", endpoint="route")
        - value(before, "skeldir_llm_calls_deduplicated_total", endpoint="route")
        == 1
    )


def test_batch_calls_are_counted_once_too(client, tenant_a, tenant_b):
    before = scrape(client)
    batch = [payload_data(tenant.id, "route") for tenant in (tenant_a, tenant_b, tenant_a)]
    first = tasks.record_calls_batch.apply(args=[batch], task_id="batch-1")
    again = tasks.record_calls_batch.apply(args=[batch], task_id="batch-1")  # redelivered
    assert (first.result["recorded"], again.result["recorded"]) == (3, 0)
    after = scrape(client)

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("skeldir_llm_calls_recorded_total", endpoint="route", model="stub-small") == 3
    cost = sum(expected_cost_micros(stub_provider.usage_for("route", payload["prompt"])) for payload in batch)
    assert moved("skeldir_llm_cost_micros_total", endpoint="route", model="stub-small") == cost
    assert moved("skeldir_llm_calls_deduplicated_total", endpoint="route") == 3


def test_a_rolled_back_call_counts_nothing(client, tenant_a):
    before = scrape(client)
    payload = LLMTaskPayload.parse(payload_data(tenant_a.id, "explanation"))
    with pytest.raises(services.ForcedFailure):
        services.generate_explanation(payload, force_failure=True)
    after = scrape(client)
    recorded = {k: v for k, v in after.items() if k[0].startswith(("skeldir_llm_calls", "skeldir_llm_cost"))}
    assert recorded == {k: before.get(k, 0.0) for k in recorded}


def test_task_outcomes_durations_and_validation_rejections(client, tenant_a):
    before = scrape(client)
    assert tasks.investigation.apply(args=[payload_data(tenant_a.id, "investigation")]).successful()
    rejected = [
        tasks.route.apply(args=[{**payload_data(tenant_a.id), "extra": 1}]),
        tasks.route.apply(args=[payload_data(tenant_a.id, max_cost_cents=0)]),
        tasks.route.apply(args=[payload_data(uuid.UUID(int=5))]),
    ]
    assert all(result.failed() for result in rejected)
    after = scrape(client)

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("skeldir_celery_tasks_total", task="llm.investigation", outcome="success") == 1
    assert moved("skeldir_celery_tasks_total", task="llm.route", outcome="failure") == 3
    duration = "skeldir_celery_task_duration_seconds"
    assert moved(f"{duration}_count", task="llm.investigation", outcome="success") == 1
    assert moved(f"{duration}_sum", task="llm.investigation", outcome="success") > 0
    for reason in ("invalid_payload", "cost_limit_exceeded", "unknown_tenant"):
        assert moved("skeldir_llm_validation_rejections_total", source="llm.route", reason=reason) == 1
    assert moved("skeldir_llm_calls_recorded_total", endpoint="investigation", model="stub-large") == 1


def test_reconciliation_counts_the_months_it_finds_drifted(client, tenant_a, tenant_b):
    before = value(scrape(client), "skeldir_llm_reconciliation_drifts_total")
    # Monthly rows that no calls back up: drift, as a restore of one table alone would leave.
    create_tenant_row(LLMMonthlyCost, tenant=tenant_a)
    create_tenant_row(LLMMonthlyCost, tenant=tenant_b)
    assert len(tasks.reconcile_monthly_costs.apply().result["drifts"]) == 2
    assert tasks.reconcile_monthly_costs.apply(kwargs={"fix": True}).successful()
    assert tasks.reconcile_monthly_costs.apply().result["drifts"] == []
    assert value(scrape(client), "skeldir_llm_reconciliation_drifts_total") - before == 4


def test_labels_never_carry_tenant_ids_request_ids_or_free_text(client, tenant_a, tenant_b):
    request_ids = []
    for tenant in (tenant_a, tenant_b):
        data = payload_data(tenant.id, "route", request_id=f"req-{tenant.id}")
        request_ids.append(tasks.route.apply(args=[data]).result["request_id"])
    samples = scrape(client)
    forbidden = {str(tenant_a.id), str(tenant_b.id), *request_ids}
    for name, labels in samples:
        if not name.startswith("skeldir_"):
            continue
        assert {label for label, _ in labels} <= ALLOWED_LABELS, name
        for _, label_value in labels:
            assert not any(f in label_value for f in forbidden), (name, label_value)


def test_a_model_label_is_a_known_model_or_other():
    # The model comes from the prompt: a label value a client could choose would be unbounded.
    assert metrics.model_label("stub-small") == "stub-small"
    assert metrics.model_label(f"custom-{uuid.uuid4()}") == "other"


def test_a_prefork_worker_serves_its_childrens_metrics_and_logs_json(start_worker, tenant_a, tmp_path):
    broker = "redis" if REDIS_URL.startswith("redis") else "postgres"
    port = free_port()
    worker = start_worker(
        broker,
        concurrency=2,
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prometheus"),
        WORKER_METRICS_PORT=str(port),
        LOG_LEVEL="DEBUG",
    )
    secret = "WORKER-PROMPT-SECRET-91c2"
    payloads = [
        LLMTaskPayload.parse(payload_data(tenant_a.id, "route", prompt={"text": f"{secret} {n}"}))
        for n in range(4)
    ]
    task_ids = [send(broker, "route", payload) for payload in payloads]
    wait_for_calls(tenant_a, 4, timeout=60, worker=worker)

    def worker_metrics():
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            return parse(response.read().decode())

    labels = {"endpoint": "route", "model": "stub-small"}
    samples = worker_metrics()
    for _ in range(50):  # the last task's postrun may land just after its commit
        if value(samples, "skeldir_celery_tasks_total", task="llm.route", outcome="success") == 4:
            break
        samples = worker_metrics()
    assert value(samples, "skeldir_llm_calls_recorded_total", **labels) == 4
    assert value(samples, "skeldir_celery_tasks_total", task="llm.route", outcome="success") == 4
    assert (
        value(samples, "skeldir_celery_task_duration_seconds_count", task="llm.route", outcome="success") == 4
    )
    assert len(os.listdir(tmp_path / "prometheus")) >= 1  # the children wrote their own files

    output = worker.output()
    assert secret not in output
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    for task_id, payload in zip(task_ids, payloads, strict=True):
        mine = [line for line in lines if line["task_id"] == task_id]
        finished = next(line for line in mine if line["logger"] == "skeldir.task")
        assert (finished["tenant_id"], finished["request_id"], finished["correlation_id"]) == (
            str(tenant_a.id),
            payload.request_id_for("route"),
            payload.correlation_id,
        )
        received = next(line for line in mine if line["message"].endswith("received"))
        assert task_id in received["message"]


def test_api_rejections_are_counted_by_reason(client, api_client, tenant_a):
    before = scrape(client)
    tenant_client = api_client(tenant_a)
    bad = tenant_client.post("/api/llm/investigations", {"question": ""}, content_type="application/json")
    huge = tenant_client.post(
        "/api/llm/explanations", {"prompt": {"text": "x" * 70_000}}, content_type="application/json"
    )
    assert (bad.status_code, huge.status_code) == (400, 413)
    after = scrape(client)
    name = "skeldir_llm_validation_rejections_total"
    for reason in ("invalid_request", "request_data_too_big"):
        assert (
            value(after, name, source="api", reason=reason) - value(before, name, source="api", reason=reason)
            == 1
        )
