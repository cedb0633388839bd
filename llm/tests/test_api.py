"""The tenant HTTP API through the test client: every route, auth, errors, idempotency and
the tenant boundary. Tasks run eagerly at commit (Celery's own `apply`); the real-worker
path is in test_celery_worker.py."""

import base64
import json

import pytest
from django.db import connection

from llm.models import BudgetOptimizationJob, Investigation, LLMApiCall, LLMMonthlyCost
from llm.payloads import LLMTaskPayload
from llm.selectors import current_utc_month
from llm.services import CostLimitExceeded, run_investigation
from llm.tests.factories import record_route_call
from skeldir.tenancy import tenant_context

pytestmark = pytest.mark.django_db(transaction=True)

API = "/api/llm"
# A forged cursor: the API's carry their time's offset, this one's is naive.
NAIVE_CURSOR = base64.urlsafe_b64encode(b"2026-01-01T00:00:00|00000000-0000-4000-8000-000000000000").decode()


def post(client, path, body, **headers):
    return client.post(
        f"{API}{path}", data=json.dumps(body), content_type="application/json", headers=headers
    )


def record_calls(tenant, count, *, model="test-small", cost=5):
    for _ in range(count):
        record_route_call(tenant, model=model, cost_cents=cost)


@pytest.mark.django_db(transaction=False)
def test_an_investigation_is_pending_until_its_task_runs_then_completed(
    api_client, tenant_a, run_tasks_eagerly, django_capture_on_commit_callbacks
):
    client = api_client(tenant_a)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = post(client, "/investigations", {"question": "Why is Google Ads underperforming?"})
        assert response.status_code == 202
        body = response.json()
        assert body["status"] == "pending"
        assert response["Location"] == body["status_url"] == f"{API}/investigations/{body['job_id']}"
        pending = client.get(body["status_url"]).json()
        assert (pending["status"], pending["result"], pending["request_id"]) == (
            "pending",
            None,
            body["request_id"],
        )
    assert len(callbacks) == 1  # the task is sent only once the job row is committed
    callbacks[0]()

    done = client.get(body["status_url"]).json()
    assert done["status"] == "completed"
    assert done["query"] == "Why is Google Ads underperforming?"
    assert done["result"]["question"] == done["query"]
    assert done["cost_micros"] > 0
    with tenant_context(tenant_a.id):
        call = LLMApiCall.objects.get()
    assert (call.endpoint, call.request_id, call.cost_micros, call.cost_cents) == (
        "investigation",
        body["request_id"],
        done["cost_micros"],
        done["cost_cents"],
    )


def test_a_budget_optimization_completes_with_an_exact_allocation(api_client, tenant_a, run_tasks_eagerly):
    client = api_client(tenant_a)
    response = post(
        client,
        "/budget-optimizations",
        {"total_budget_cents": 250_000, "channels": {"google_ads": 3.2, "meta_ads": 1.5, "email": 0.3}},
    )
    assert response.status_code == 202
    job = client.get(response.json()["status_url"]).json()
    assert job["status"] == "completed"
    assert sum(job["recommendations"]["allocations_cents"].values()) == 250_000
    assert job["cost_micros"] > 0


def test_a_job_that_cannot_succeed_is_refused_up_front(api_client, tenant_a, run_tasks_eagerly):
    client = api_client(tenant_a)
    response = post(client, "/investigations", {"question": "Why?", "max_cost_cents": 0})
    assert response.status_code == 400
    assert "over max_cost_cents 0" in response.json()["error"]
    with tenant_context(tenant_a.id):
        assert not Investigation.objects.exists()
        assert LLMApiCall.objects.count() == 0


def test_a_job_whose_task_cannot_succeed_ends_failed_with_the_reason(tenant_a):
    """A task sent around the API (or before a price change) still fails its job cleanly."""
    with tenant_context(tenant_a.id):
        job = Investigation.objects.create(tenant_id=tenant_a.id, query="Why?")
    payload = LLMTaskPayload.parse(
        {"tenant_id": str(tenant_a.id), "prompt": {"question": "Why?"}, "max_cost_cents": 0}
    )
    with pytest.raises(CostLimitExceeded):
        run_investigation(payload, job_id=job.id)
    with tenant_context(tenant_a.id):
        job.refresh_from_db()
        assert LLMApiCall.objects.count() == 0
    assert job.status == "failed"
    assert "over max_cost_cents 0" in job.result["error"]


@pytest.mark.parametrize(("path", "endpoint"), [("/explanations", "explanation"), ("/route", "route")])
def test_explanations_and_routes_are_accepted_and_recorded(
    api_client, tenant_a, run_tasks_eagerly, path, endpoint
):
    response = post(api_client(tenant_a), path, {"prompt": {"metric": "roas", "channel": "meta_ads"}})
    assert response.status_code == 202
    request_id = response.json()["request_id"]
    with tenant_context(tenant_a.id):
        assert LLMApiCall.objects.get().request_id == request_id
        assert LLMApiCall.objects.get().endpoint == endpoint


@pytest.mark.parametrize(
    ("path", "body", "model"),
    [
        ("/investigations", {"question": "Why?"}, Investigation),
        ("/budget-optimizations", {"total_budget_cents": 100, "channels": {"a": 1}}, BudgetOptimizationJob),
        ("/explanations", {"prompt": {"q": 1}}, None),
    ],
)
def test_an_idempotency_key_makes_a_retry_record_nothing_twice(
    api_client, tenant_a, run_tasks_eagerly, path, body, model
):
    client = api_client(tenant_a)
    first = post(client, path, body, **{"Idempotency-Key": "client-retry-7"})
    again = post(client, path, body, **{"Idempotency-Key": "client-retry-7"})
    assert first.status_code == again.status_code == 202
    assert first.json() == {**again.json(), "status": first.json()["status"]}
    assert again.json()["request_id"] == "client-retry-7"
    with tenant_context(tenant_a.id):
        assert LLMApiCall.objects.count() == 1
        assert LLMMonthlyCost.objects.get().total_calls == 1
        if model is not None:
            assert model.objects.count() == 1


def test_another_tenants_job_is_404_like_a_missing_one(api_client, tenant_a, tenant_b, run_tasks_eagerly):
    job_url = post(api_client(tenant_a), "/investigations", {"question": "Why?"}).json()["status_url"]
    client_b = api_client(tenant_b)
    assert client_b.get(job_url).status_code == 404
    assert client_b.get(job_url).json()["error"].startswith("No investigation")
    assert client_b.get(f"{API}/investigations/00000000-0000-4000-8000-000000000000").status_code == 404
    assert client_b.get(f"{API}/budget-optimizations/not-a-uuid").status_code == 404
    assert api_client(tenant_a).get(job_url).status_code == 200


def test_month_costs_show_the_tenants_totals_and_breakdown(api_client, tenant_a, tenant_b):
    record_calls(tenant_a, 3, model="test-small", cost=5)
    record_calls(tenant_a, 1, model="test-large", cost=40)
    record_calls(tenant_b, 2, model="test-medium", cost=7)
    month = current_utc_month()
    response = api_client(tenant_a).get(f"{API}/costs", {"month": f"{month:%Y-%m}"})
    assert response.status_code == 200
    assert response.json() == {
        "tenant_id": str(tenant_a.id),
        "month": month.isoformat(),
        "total_cost_micros": 550_000,
        "total_cost_cents": 55,
        "total_calls": 4,
        "model_breakdown": {
            "test-small": {"calls": 3, "cost_micros": 150_000, "cost_cents": 15},
            "test-large": {"calls": 1, "cost_micros": 400_000, "cost_cents": 40},
        },
    }
    assert api_client(tenant_a).get(f"{API}/costs").json()["total_calls"] == 4  # default: this month
    empty = api_client(tenant_a).get(f"{API}/costs", {"month": "2001-02"}).json()
    assert (empty["month"], empty["total_calls"], empty["model_breakdown"]) == ("2001-02-01", 0, {})


def test_calls_are_listed_newest_first_in_stable_pages(api_client, tenant_a, tenant_b):
    record_calls(tenant_a, 7)
    record_calls(tenant_b, 3)
    with tenant_context(tenant_a.id):
        expected = [
            str(i) for i in LLMApiCall.objects.order_by("-created_at", "-id").values_list("id", flat=True)
        ]
    client = api_client(tenant_a)
    seen, cursor = [], None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = client.get(f"{API}/calls", params).json()
        assert len(page["items"]) <= 3
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == expected
    newest = client.get(
        f"{API}/calls", {"since": client.get(f"{API}/calls").json()["items"][0]["created_at"]}
    )
    assert [item["id"] for item in newest.json()["items"]] == expected[:1]


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("post", "/investigations", {}, "question"),
        ("post", "/investigations", {"question": ""}, "question"),
        ("post", "/investigations", {"question": "Why?", "priority": "high"}, "priority"),
        ("post", "/investigations", {"question": "Why?", "max_cost_cents": -1}, "max_cost_cents"),
        (
            "post",
            "/budget-optimizations",
            {"total_budget_cents": "100", "channels": {"a": 1}},
            "total_budget_cents",
        ),
        ("post", "/budget-optimizations", {"total_budget_cents": 100, "channels": {}}, "channels"),
        ("post", "/budget-optimizations", {"total_budget_cents": 100, "channels": {"a": -2}}, "channels.a"),
        ("post", "/explanations", {"prompt": "text"}, "prompt"),
        ("get", "/costs?month=2026-13", None, "month"),
        ("get", "/calls?limit=0", None, "limit"),
        ("get", "/calls?limit=abc", None, "limit"),
        ("get", "/calls?since=yesterday", None, "since"),
        ("get", "/calls?cursor=bm9wZQ", None, "cursor"),
        ("get", f"/calls?cursor={NAIVE_CURSOR}", None, "cursor"),
        ("get", "/calls?since=1767225600", None, "since"),  # a Unix time, not RFC 3339
        ("get", "/calls?since=2026-01-01T00:00:00", None, "since"),  # no offset
    ],
)
def test_bad_input_gets_a_400_naming_the_field_and_writes_nothing(
    api_client, tenant_a, method, path, body, field
):
    client = api_client(tenant_a)
    response = post(client, path, body) if method == "post" else client.get(f"{API}{path}")
    assert response.status_code == 400, response.content
    assert field in response.json()["fields"]
    with tenant_context(tenant_a.id):
        assert Investigation.objects.count() == BudgetOptimizationJob.objects.count() == 0


def test_a_body_that_is_not_json_is_a_400(api_client, tenant_a):
    response = api_client(tenant_a).post(
        f"{API}/investigations", data="{nope", content_type="application/json"
    )
    assert response.status_code == 400


def test_an_idempotency_key_must_be_sane(api_client, tenant_a):
    response = post(
        api_client(tenant_a), "/investigations", {"question": "Why?"}, **{"Idempotency-Key": "x" * 300}
    )
    assert response.status_code == 400
    assert "Idempotency-Key" in json.dumps(response.json())


def test_a_body_over_the_limit_is_a_413_and_writes_nothing(api_client, tenant_a, settings):
    response = post(
        api_client(tenant_a),
        "/explanations",
        {"prompt": {"text": "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE)}},
    )
    assert response.status_code == 413
    assert "Request body over" in response.json()["error"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/investigations"),
        ("get", "/investigations/00000000-0000-4000-8000-000000000000"),
        ("post", "/budget-optimizations"),
        ("get", "/budget-optimizations/00000000-0000-4000-8000-000000000000"),
        ("post", "/explanations"),
        ("post", "/route"),
        ("get", "/costs"),
        ("get", "/calls"),
    ],
)
@pytest.mark.parametrize("authorization", [None, "Bearer sk_not-a-real-key", "Token abc"])
def test_every_route_requires_a_valid_tenant_key(client, method, path, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    if method == "post":
        response = client.post(f"{API}{path}", headers=headers, content_type="application/json", data="{}")
    else:
        response = client.get(f"{API}{path}", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]


def test_the_openapi_document_describes_every_route():
    from django.test import Client

    response = Client().get(f"{API}/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert set(document["paths"]) >= {
        f"{API}/investigations",
        f"{API}/investigations/{{job_id}}",
        f"{API}/budget-optimizations",
        f"{API}/budget-optimizations/{{job_id}}",
        f"{API}/explanations",
        f"{API}/route",
        f"{API}/costs",
        f"{API}/calls",
    }
    assert document["components"]["securitySchemes"]["TenantAPIKey"]["scheme"] == "bearer"


def test_an_error_response_commits_nothing_of_the_request(api_client, tenant_a):
    response = post(api_client(tenant_a), "/investigations", {"question": "Why?", "max_cost_cents": "ten"})
    assert response.status_code == 400
    assert not connection.in_atomic_block
    with tenant_context(tenant_a.id):
        assert Investigation.objects.count() == 0
