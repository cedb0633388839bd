"""What the API refuses, and how: every bad input is a 400 naming the field, before anything
is written or sent, and every answer under /api/llm/ is the JSON error shape, with no
database text in it. Nothing the API accepts may fail validation later in the worker."""

import dataclasses
import json

import pytest
from django.db import connection
from django.test import Client

from llm.models import BudgetOptimizationJob, Investigation, JobStatus, LLMApiCall
from llm.payloads import InvalidPayload, LLMTaskPayload
from llm.services import jobs, run_investigation
from llm.tests.factories import payload_data
from skeldir.tenancy import tenant_context

pytestmark = pytest.mark.django_db(transaction=True)

API = "/api/llm"


def post(client, path, body, **headers):
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(f"{API}{path}", data=data, content_type="application/json", headers=headers)


def nothing_written(tenant) -> bool:
    with tenant_context(tenant.id):
        return not (
            LLMApiCall.objects.exists()
            or Investigation.objects.exists()
            or BudgetOptimizationJob.objects.exists()
        )


def assert_error_shape(response, status: int) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert isinstance(body["error"], str) and body["error"]
    assert set(body) <= {"error", "fields"}
    return body


@pytest.mark.parametrize("month", ["0000-01", "0000-12"])
def test_a_month_no_calendar_has_is_a_400_naming_the_field(api_client, tenant_a, month):
    body = assert_error_shape(api_client(tenant_a).get(f"{API}/costs", {"month": month}), 400)
    assert "month" in body["fields"]


NUL = "\u0000"
NUL_BODIES = [
    pytest.param("/investigations", {"question": f"Why{NUL}?"}, "question", id="question"),
    pytest.param(
        "/budget-optimizations",
        {"total_budget_cents": 100, "channels": {f"google{NUL}": 1}},
        "channels",
        id="channel-name",
    ),
    pytest.param("/route", {"prompt": {f"key{NUL}": "v"}}, "prompt", id="prompt-key"),
    pytest.param("/explanations", {"prompt": {"nested": [{"k": f"v{NUL}"}]}}, "prompt", id="prompt-value"),
]


@pytest.mark.parametrize(("path", "body", "field"), NUL_BODIES)
def test_a_nul_character_in_any_text_is_a_400_and_writes_nothing(
    api_client, tenant_a, run_tasks_eagerly, path, body, field
):
    response = assert_error_shape(post(api_client(tenant_a), path, body), 400)
    assert any(name.startswith(field) for name in response["fields"]), response
    assert "NUL" in json.dumps(response)
    assert nothing_written(tenant_a)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        pytest.param("/route", '{"prompt": {"k": "\\ud800"}}', id="prompt-value"),
        pytest.param("/explanations", '{"prompt": {"a\\udfff": 1}}', id="prompt-key"),
        pytest.param("/investigations", '{"question": "Why\\ud800?"}', id="question"),
    ],
)
def test_a_lone_surrogate_in_any_text_is_a_400_and_writes_nothing(
    api_client, tenant_a, run_tasks_eagerly, path, body
):
    """JSON can escape half a UTF-16 pair; neither PostgreSQL nor UTF-8 can hold one."""
    assert_error_shape(post(api_client(tenant_a), path, body), 400)
    assert nothing_written(tenant_a)


def test_the_task_payload_contract_refuses_nul_too(tenant_a):
    for overrides in ({"prompt": {"a": NUL}}, {"correlation_id": f"c{NUL}"}, {"request_id": f"r{NUL}"}):
        with pytest.raises(InvalidPayload, match="NUL"):
            LLMTaskPayload.parse(payload_data(tenant_a.id, **overrides))


WORKER_WOULD_REFUSE = [
    pytest.param(
        "/budget-optimizations",
        {"total_budget_cents": 100, "channels": {"a": 1e308, "b": 1e308}},
        id="huge-score",
    ),
    pytest.param(
        "/budget-optimizations", '{"total_budget_cents": 100, "channels": {"a": Infinity}}', id="inf"
    ),
    pytest.param(
        "/budget-optimizations", {"total_budget_cents": 2**63, "channels": {"a": 1}}, id="huge-budget"
    ),
    pytest.param("/route", {"prompt": {"model": "gpt-unknown"}}, id="unknown-model"),
    pytest.param("/route", {"prompt": {"model": ""}}, id="empty-model"),
    pytest.param(
        "/explanations", {"prompt": {"model": "stub-large"}, "max_cost_cents": 0}, id="over-cost-cap"
    ),
    pytest.param("/route", {"prompt": {"n": 2**70}}, id="int-over-64-bits"),
    pytest.param("/route", {"prompt": {"n": [-4.4e55]}}, id="whole-float-over-64-bits"),
    pytest.param("/route", {"prompt": {"x": 1}, "max_cost_cents": 2**63}, id="cap-over-bigint"),
    pytest.param("/route", {"prompt": {"sleep_ms": 60001}}, id="sleep-knob"),
    pytest.param("/route", {"prompt": {"simulated_cost_cents": 5}}, id="cost-knob"),
    pytest.param("/route", {"prompt": {"simulated_cost_cents": -1}}, id="negative-cost-knob"),
    pytest.param("/explanations", {"prompt": {"simulated_cost_cents": 2**63 - 1}}, id="bigint-cost-knob"),
    pytest.param("/route", {"prompt": json.loads("[" * 20 + "]" * 20)}, id="not-an-object"),
    pytest.param("/route", {"prompt": {"deep": json.loads("[" * 40 + "]" * 40)}}, id="nested-too-deep"),
]


@pytest.mark.parametrize(("path", "body"), WORKER_WOULD_REFUSE)
def test_what_the_worker_would_refuse_is_a_400_at_the_api_and_nothing_is_sent(
    api_client, tenant_a, django_capture_on_commit_callbacks, path, body
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert_error_shape(post(api_client(tenant_a), path, body), 400)
    assert callbacks == []  # no task sent
    assert nothing_written(tenant_a)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param("not json at all", id="not-json"),
        pytest.param("[" * 5000 + "]" * 5000, id="nested-5000"),
        pytest.param(b"\xff\xfe", id="not-utf8"),
    ],
)
def test_an_unparseable_body_is_a_json_400(api_client, tenant_a, body):
    response = assert_error_shape(post(api_client(tenant_a), "/route", body), 400)
    assert "body" in response["fields"]


def test_a_method_a_route_does_not_take_is_a_json_405(api_client, tenant_a):
    response = api_client(tenant_a).delete(f"{API}/costs")
    assert_error_shape(response, 405)
    assert "GET" in response["Allow"]


@pytest.mark.parametrize("path", ["/nope", "/investigations/x/y", "/costs/current/more"])
def test_an_unknown_path_under_the_api_is_a_json_404(api_client, tenant_a, path):
    assert_error_shape(api_client(tenant_a).get(f"{API}{path}"), 404)
    assert_error_shape(Client().get(f"{API}{path}"), 404)  # with no key too


def test_an_unexpected_error_is_a_json_500_without_internals(api_client, tenant_a, monkeypatch, caplog):
    from llm import selectors

    def broken(**kwargs):
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1/0 AS secret_column")

    monkeypatch.setattr(selectors, "get_monthly_cost", broken)
    client = api_client(tenant_a)
    client.raise_request_exception = False
    body = assert_error_shape(client.get(f"{API}/costs/current"), 500)
    assert "division" not in body["error"] and "secret_column" not in body["error"]
    assert "division by zero" in caplog.text  # the detail is in the log


def test_a_failed_jobs_reason_carries_no_database_text(tenant_a, monkeypatch):
    """A job whose call fails on a database error shows a fixed reason; the log has the rest."""
    with tenant_context(tenant_a.id):
        job = Investigation.objects.create(tenant_id=tenant_a.id, request_id="job-db-error", query="Why?")

    def failing_outcome(prompt):
        with connection.cursor() as cursor:
            cursor.execute("SELECT %s::int", ["not a number, with a secret"])

    monkeypatch.setattr(
        jobs, "INVESTIGATION", dataclasses.replace(jobs.INVESTIGATION, outcome=failing_outcome)
    )
    payload = LLMTaskPayload.parse(payload_data(tenant_a.id, "investigation", request_id="job-db-error"))
    with pytest.raises(Exception, match="invalid input syntax"):
        run_investigation(payload, job_id=job.id)
    with tenant_context(tenant_a.id):
        job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert job.result == {"error": jobs.INTERNAL_FAILURE_REASON}
    assert nothing_written_but_the_job(tenant_a)


def nothing_written_but_the_job(tenant) -> bool:
    with tenant_context(tenant.id):
        return not LLMApiCall.objects.exists()


def test_jobs_created_through_the_orm_get_distinct_request_ids(tenant_a):
    with tenant_context(tenant_a.id):
        first = Investigation.objects.create(tenant_id=tenant_a.id, query="one")
        second = Investigation.objects.create(tenant_id=tenant_a.id, query="two")
        third = BudgetOptimizationJob.objects.create(tenant_id=tenant_a.id)
    assert len({first.request_id, second.request_id}) == 2 and third.request_id
