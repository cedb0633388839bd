"""Structured logs: every line of a task run or a request is one JSON object carrying the
tenant_id, request_id, correlation_id and task_id in force, and a prompt never appears.
(A real worker's log is checked in test_metrics.py, with its metrics.)"""

import io
import json
import logging
import os
import uuid

import pytest
from celery.worker.consumer import consumer
from django.conf import settings
from django.db import connection
from kombu import Connection

from llm import tasks
from llm.payloads import LLMTaskPayload
from llm.tests.factories import payload_data
from skeldir.logs import (
    EMPTY_CONTEXT,
    ContextFilter,
    JsonFormatter,
    bind_log_context,
    current_log_context,
    reset_log_context,
)

SECRET = "PROMPT-SECRET-7f3a"


@pytest.fixture
def json_log():
    """The project's formatter and filter on a handler of our own, root at DEBUG."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def ids(line: dict) -> tuple:
    return line["tenant_id"], line["request_id"], line["correlation_id"], line["task_id"]


@pytest.mark.skipif("LOG_FORMAT" in os.environ, reason="LOG_FORMAT is set in this environment")
def test_the_console_handler_writes_json_with_the_ids_by_default():
    assert settings.LOG_FORMAT == "json"
    console = settings.LOGGING["handlers"]["console"]
    assert console["formatter"] == "json" and "context" in console["filters"]
    configured = [h for h in logging.getLogger().handlers if isinstance(h.formatter, JsonFormatter)]
    assert configured and any(isinstance(f, ContextFilter) for f in configured[0].filters)


def test_a_line_is_one_json_object_with_the_bound_ids(json_log):
    token = bind_log_context(tenant_id=uuid.UUID(int=7), request_id="r-1", correlation_id="c-1")
    try:
        logging.getLogger("llm.anything").warning(
            "hello %s", "world", extra={"status": 201, "prompt": SECRET}
        )
    finally:
        reset_log_context(token)
    logging.getLogger("llm.anything").info("after")
    first, second = json_log()
    assert first["message"] == "hello world"
    assert (first["level"], first["logger"], first["status"]) == ("WARNING", "llm.anything", 201)
    assert ids(first) == (str(uuid.UUID(int=7)), "r-1", "c-1", None)
    assert ids(second) == (None, None, None, None)  # every id field is always there
    assert "prompt" not in first  # extras outside the documented few are not written


@pytest.mark.django_db(transaction=True)
def test_a_task_run_logs_json_lines_carrying_its_four_ids(tenant_a, json_log):
    payload = payload_data(tenant_a.id, "route", request_id="req-log-1", correlation_id="corr-log-1")
    result = tasks.route.apply(args=[payload], task_id="task-log-1")
    assert result.successful(), result.traceback
    lines = [line for line in json_log() if line["task_id"] == "task-log-1"]
    assert lines
    assert {ids(line) for line in lines} == {(str(tenant_a.id), "req-log-1", "corr-log-1", "task-log-1")}
    finished = next(line for line in lines if line["logger"] == "skeldir.task")
    assert (finished["task_name"], finished["state"]) == ("llm.route", "SUCCESS")
    assert finished["duration_ms"] >= 0
    assert current_log_context() == dict(EMPTY_CONTEXT)  # cleared after the run


@pytest.mark.django_db(transaction=True)
def test_a_failing_tasks_error_line_carries_the_ids_and_derived_request_id(tenant_a, json_log):
    payload = payload_data(tenant_a.id, "explanation", max_cost_cents=0)
    del payload["correlation_id"]  # the task id stands in, and the request_id derives from it
    result = tasks.explanation.apply(args=[payload], task_id="task-log-2")
    assert result.failed()
    error = next(line for line in json_log() if line["level"] == "ERROR")
    assert error["logger"] == "celery.app.trace"
    assert "CostLimitExceeded" in error["message"]
    expected_request_id = LLMTaskPayload.parse(payload, fallback_correlation_id="task-log-2").request_id_for(
        "explanation"
    )
    assert ids(error) == (str(tenant_a.id), expected_request_id, "task-log-2", "task-log-2")


@pytest.mark.django_db(transaction=True)
def test_an_invalid_payload_names_only_what_is_valid_in_it(tenant_a, json_log):
    bad = {**payload_data(tenant_a.id), "unexpected": 1}
    tasks.route.apply(args=[bad], task_id="task-log-3")
    tasks.route.apply(args=[{**bad, "tenant_id": "not-a-uuid"}], task_id="task-log-4")
    by_task = {line["task_id"]: line for line in json_log() if line["logger"] == "skeldir.task"}
    assert ids(by_task["task-log-3"]) == (str(tenant_a.id), None, None, "task-log-3")
    assert ids(by_task["task-log-4"]) == (None, None, None, "task-log-4")


@pytest.mark.django_db(transaction=True)
def test_a_task_applied_inside_a_request_gives_the_request_its_ids_back(tenant_a):
    token = bind_log_context(request_id="outer-request", correlation_id="outer")
    try:
        tasks.route.apply(args=[payload_data(tenant_a.id)])
        assert current_log_context() == {
            **EMPTY_CONTEXT,
            "request_id": "outer-request",
            "correlation_id": "outer",
        }
    finally:
        reset_log_context(token)


@pytest.mark.django_db(transaction=True)
def test_request_lines_carry_the_request_and_tenant_ids(client, tenant_factory, tenant_a, json_log):
    api_key = tenant_factory.api_keys[tenant_a.id]
    response = client.get(
        "/healthz",
        headers={
            "Authorization": f"Bearer {api_key}",
            "Idempotency-Key": "idem-1",
            "X-Correlation-ID": "corr-9",
        },
    )
    assert response["X-Request-ID"] == "idem-1"
    missing = client.get("/no-such-page", headers={"X-Request-ID": "proxy-id-2"})
    assert missing.status_code == 404 and missing["X-Request-ID"] == "proxy-id-2"
    generated = client.get("/healthz")["X-Request-ID"]
    lines = json_log()
    request_line = next(line for line in lines if line.get("path") == "/healthz")
    assert ids(request_line) == (str(tenant_a.id), "idem-1", "corr-9", None)
    assert (request_line["method"], request_line["status"]) == ("GET", 200)
    # Django's own "Not Found" line, logged after the middleware has returned, has them too.
    not_found = next(line for line in lines if line["logger"] == "django.request")
    assert ids(not_found) == (None, "proxy-id-2", "proxy-id-2", None)
    assert len(generated) == 32 and generated in {line["request_id"] for line in lines}
    assert current_log_context() == dict(EMPTY_CONTEXT)  # request_finished cleared them


@pytest.mark.django_db(transaction=True)
def test_prompts_never_reach_the_log_even_at_debug(tenant_a, json_log):
    connection.force_debug_cursor = True  # Django would log every query with its parameters
    try:
        question = {"question": f"Why did {SECRET} drop?", "note": SECRET}
        runs = [
            tasks.route.apply(args=[payload_data(tenant_a.id, prompt={"text": SECRET})]),
            tasks.investigation.apply(args=[payload_data(tenant_a.id, "investigation", prompt=question)]),
            tasks.explanation.apply(args=[payload_data(tenant_a.id, prompt={"t": SECRET}, max_cost_cents=0)]),
            tasks.route.apply(args=[{**payload_data(tenant_a.id, prompt={"t": SECRET}), "extra": SECRET}]),
            tasks.route.apply(args=[payload_data(uuid.UUID(int=1), prompt={"t": SECRET})]),
        ]
    finally:
        connection.force_debug_cursor = False
    assert [run.successful() for run in runs] == [True, True, False, False, False]
    lines = json_log()
    assert len(lines) >= 5
    assert SECRET not in json.dumps(lines)


def test_celerys_dump_of_an_unrunnable_message_is_withheld(json_log):
    body = json.dumps([[{"prompt": {"text": SECRET}}], {}, {}])
    logging.getLogger("celery.worker.consumer.consumer").error(
        consumer.UNKNOWN_TASK_ERROR, KeyError("llm.renamed"), body, {"argsrepr": SECRET}, {"queue": "llm"}
    )
    logging.getLogger("celery.worker.consumer.consumer").warning(consumer.UNKNOWN_FORMAT, f"body: {body}")
    lines = json_log()
    assert "llm.renamed" in lines[0]["message"] and "withheld" in lines[0]["message"]
    assert "withheld" in lines[1]["message"]
    assert SECRET not in json.dumps(lines)


def test_published_task_messages_carry_no_argument_repr():
    # Workers, events and `celery inspect` show argsrepr; it would be the prompt by default.
    with Connection("memory://") as conn:
        tasks.route.apply_async(args=[payload_data(uuid.UUID(int=3), prompt={"t": SECRET})], connection=conn)
        with conn.SimpleQueue("llm") as queue:
            message = queue.get(timeout=5)
            message.ack()
    assert message.headers["argsrepr"] == message.headers["kwargsrepr"] == "(withheld)"
    assert message.headers["task"] == "llm.route"
