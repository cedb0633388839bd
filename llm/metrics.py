"""Prometheus metrics: calls and cost by endpoint and model, task outcomes and durations,
validation rejections. Served at /metrics on web and, for workers, by the worker's main
process on WORKER_METRICS_PORT.

Several processes (gunicorn workers, Celery's prefork children) each count their own work;
prometheus-client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR) has each write to files in
that directory, and a scrape adds them up. Without it (development, tests) the counters live
in this process. Only counters and histograms: they add up across processes exactly.

Labels never carry tenant ids, request ids or anything a client chooses freely: one series
per tenant or request would grow without bound. Per-tenant cost lives in the database.
"""

import logging
import os
import time
from collections.abc import Sequence

from celery import signals as celery_signals
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)

from llm.payloads import ENDPOINTS, InvalidPayload
from llm.prices import CATALOGUE

logger = logging.getLogger(__name__)

MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
if MULTIPROC_DIR:
    os.makedirs(MULTIPROC_DIR, exist_ok=True)  # the value files are created in it on first use

CALLS_RECORDED = Counter(
    "skeldir_llm_calls_recorded",
    "LLM calls recorded (committed), by endpoint and model.",
    ["endpoint", "model"],
)
COST_MICROS = Counter(
    "skeldir_llm_cost_micros",
    "Cost of the LLM calls recorded, in micro-USD (exact), by endpoint and model.",
    ["endpoint", "model"],
)
CALLS_DEDUPLICATED = Counter(
    "skeldir_llm_calls_deduplicated",
    "LLM calls found already recorded (a retry or redelivery with the same request_id).",
    ["endpoint"],
)
TASKS = Counter("skeldir_celery_tasks", "Celery task runs by task name and final state.", ["task", "outcome"])
TASK_DURATION = Histogram(
    "skeldir_celery_task_duration_seconds",
    "Celery task run time (prerun to postrun), by task name and final state.",
    ["task", "outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
VALIDATION_REJECTIONS = Counter(
    "skeldir_llm_validation_rejections",
    "Payloads rejected without writing anything, by where (task name or 'api') and reason.",
    ["source", "reason"],
)

RECONCILIATION_DRIFTS = Counter(
    "skeldir_llm_reconciliation_drifts",
    "Tenant-months whose monthly cost row, and budget periods whose state, disagreed with their "
    "calls, per reconciliation run.",
)

OTHER = "other"
RECONCILE_TASK = "llm.reconcile_monthly_costs"


def model_label(model: str) -> str:
    # The model comes from the prompt; only the catalogue's (operators') models become labels.
    return model if CATALOGUE.prices_of(model) else OTHER


def endpoint_label(endpoint: str) -> str:
    return endpoint if endpoint in ENDPOINTS else OTHER


def rejection_reason(error: Exception) -> str:
    """invalid_payload, unknown_tenant, cost_limit_exceeded (the InvalidPayload subclass),
    request_data_too_big, or invalid_request for the API's other request errors."""
    if isinstance(error, InvalidPayload | RequestDataTooBig):
        return "".join(f"_{c.lower()}" if c.isupper() else c for c in type(error).__name__).lstrip("_")
    return "invalid_request"


def observe_stub_call(*, endpoint: str, model: str, call) -> None:
    """Count one call (a RecordedCall) once its unit of work has committed (at once in
    autocommit; when the outer transaction commits if there is one; never if that rolls back)."""

    def count() -> None:
        if call.created:
            labels = {"endpoint": endpoint_label(endpoint), "model": model_label(model)}
            CALLS_RECORDED.labels(**labels).inc()
            COST_MICROS.labels(**labels).inc(call.cost_micros)
        else:
            CALLS_DEDUPLICATED.labels(endpoint=endpoint_label(endpoint)).inc()

    transaction.on_commit(count)


def observe_batch_calls(*, calls: Sequence, inserted: Sequence[tuple[str, int, object]]) -> None:
    """One tenant's part of a batch (services.record_api_calls_batch), once it commits:
    `inserted` are the (model, cost_micros, created_at) of its new rows; the other calls had
    been recorded before."""
    endpoints = {endpoint_label(call.endpoint) for call in calls}
    endpoint = endpoints.pop() if len(endpoints) == 1 else OTHER  # batches are of one endpoint

    def count() -> None:
        for model, cost_micros, _ in inserted:
            CALLS_RECORDED.labels(endpoint=endpoint, model=model_label(model)).inc()
            COST_MICROS.labels(endpoint=endpoint, model=model_label(model)).inc(cost_micros)
        if len(calls) > len(inserted):
            CALLS_DEDUPLICATED.labels(endpoint=endpoint).inc(len(calls) - len(inserted))

    transaction.on_commit(count)


def observe_validation_rejection(*, source: str, error: Exception) -> None:
    """For the HTTP API (`source="api"`); tasks are counted through Celery's signals."""
    VALIDATION_REJECTIONS.labels(source=source, reason=rejection_reason(error)).inc()


# --- scraping -------------------------------------------------------------------------------


def scrape_registry() -> CollectorRegistry:
    """Every process's metrics in multiprocess mode; this process's otherwise."""
    if not MULTIPROC_DIR:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=MULTIPROC_DIR)
    return registry


def metrics_view(request: HttpRequest) -> HttpResponse:
    """GET /metrics: the Prometheus text format. Not tenant data, but keep it internal."""
    return HttpResponse(generate_latest(scrape_registry()), content_type=CONTENT_TYPE_LATEST)


# --- Celery ---------------------------------------------------------------------------------

_task_started: dict[str, float] = {}


@celery_signals.task_prerun.connect(weak=False, dispatch_uid="llm.metrics.task_prerun")
def _task_prerun(task_id=None, **_) -> None:
    _task_started[task_id] = time.perf_counter()


@celery_signals.task_postrun.connect(weak=False, dispatch_uid="llm.metrics.task_postrun")
def _task_postrun(sender=None, task_id=None, task=None, state=None, **_) -> None:
    started = _task_started.pop(task_id, None)
    name = getattr(task or sender, "name", None) or OTHER
    outcome = (state or "unknown").lower()
    TASKS.labels(task=name, outcome=outcome).inc()
    if started is not None:
        TASK_DURATION.labels(task=name, outcome=outcome).observe(time.perf_counter() - started)


@celery_signals.task_failure.connect(weak=False, dispatch_uid="llm.metrics.task_failure")
def _task_failure(sender=None, exception=None, **_) -> None:
    if isinstance(exception, InvalidPayload):
        VALIDATION_REJECTIONS.labels(
            source=getattr(sender, "name", None) or OTHER, reason=rejection_reason(exception)
        ).inc()


@celery_signals.task_success.connect(weak=False, dispatch_uid="llm.metrics.task_success")
def _task_success(sender=None, result=None, **_) -> None:
    # Drift is the one thing reconciliation finds; alert on this counter moving.
    if getattr(sender, "name", None) == RECONCILE_TASK and isinstance(result, dict):
        RECONCILIATION_DRIFTS.inc(len(result.get("drifts") or ()) + len(result.get("budget_drifts") or ()))


@celery_signals.worker_ready.connect(weak=False, dispatch_uid="llm.metrics.worker_ready")
def _serve_worker_metrics(**_) -> None:
    """In the worker's main process: serve the children's metrics on WORKER_METRICS_PORT."""
    port = settings.WORKER_METRICS_PORT
    if not port:
        return
    if not MULTIPROC_DIR:
        logger.warning(
            "WORKER_METRICS_PORT is set without PROMETHEUS_MULTIPROC_DIR: a prefork worker's "
            "children count in their own memory and this port shows none of it"
        )
    start_http_server(port, registry=scrape_registry())
    logger.info("worker metrics on port %s", port)
