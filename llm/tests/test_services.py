"""The stub workers and the accounting: each unit of work writes exactly its rows, once,
atomically, inside its tenant."""

import pytest
from django.db import connections

from llm import prices, stub_provider
from llm.models import BudgetOptimizationJob, Investigation, JobStatus, LLMApiCall, LLMMonthlyCost
from llm.money import micros_to_cents
from llm.payloads import InvalidPayload, LLMTaskPayload
from llm.selectors import current_utc_month
from llm.services import (
    STUB_WORKERS,
    CostLimitExceeded,
    ForcedFailure,
    UnknownTenant,
    generate_explanation,
    optimize_budget,
    record_api_call,
    record_monthly_costs,
    route_request,
    run_investigation,
)
from llm.stub_provider import LLMUsage
from llm.tests.factories import expected_cost_micros, payload_data
from skeldir.tenancy import tenant_context

pytestmark = pytest.mark.django_db(transaction=True)

ENDPOINTS = list(STUB_WORKERS)


def payload(tenant, endpoint="route", **overrides) -> LLMTaskPayload:
    return LLMTaskPayload.parse(payload_data(tenant.id, endpoint, **overrides))


def snapshot(tenant) -> dict:
    """Everything the tenant can see, as counts and the month's totals."""
    with tenant_context(tenant.id):
        month = LLMMonthlyCost.objects.filter(month=current_utc_month()).first()
        return {
            "calls": LLMApiCall.objects.count(),
            "investigations": Investigation.objects.count(),
            "budget_jobs": BudgetOptimizationJob.objects.count(),
            "month_calls": month.total_calls if month else 0,
            "month_cost": month.total_cost_micros if month else 0,
            "breakdown": month.model_breakdown if month else {},
        }


EMPTY = {
    "calls": 0,
    "investigations": 0,
    "budget_jobs": 0,
    "month_calls": 0,
    "month_cost": 0,
    "breakdown": {},
}


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_each_worker_writes_exactly_its_rows_with_the_stub_usage(endpoint, tenant_a, tenant_b):
    task_payload = payload(tenant_a, endpoint)
    result = STUB_WORKERS[endpoint](task_payload)

    usage = stub_provider.usage_for(endpoint, task_payload.prompt)
    cost = expected_cost_micros(usage)
    assert result.recorded is True
    assert (
        result.model,
        result.input_tokens,
        result.cached_input_tokens,
        result.output_tokens,
        result.cost_micros,
        result.cost_cents,
        result.latency_ms,
    ) == (
        usage.model,
        usage.input_tokens,
        usage.cached_input_tokens,
        usage.output_tokens,
        cost,
        micros_to_cents(cost),
        usage.latency_ms,
    )
    assert cost > 0
    assert snapshot(tenant_a) == {
        "calls": 1,
        "investigations": 1 if endpoint == "investigation" else 0,
        "budget_jobs": 1 if endpoint == "budget_optimization" else 0,
        "month_calls": 1,
        "month_cost": cost,
        "breakdown": {usage.model: {"calls": 1, "cost_micros": cost, "cost_cents": micros_to_cents(cost)}},
    }
    with tenant_context(tenant_a.id):
        call = LLMApiCall.objects.get()
    assert (call.tenant_id, call.endpoint, call.request_id, call.correlation_id) == (
        tenant_a.id,
        endpoint,
        task_payload.request_id_for(endpoint),
        task_payload.correlation_id,
    )
    assert (call.input_tokens, call.output_tokens, call.cost_micros, call.latency_ms) == (
        usage.input_tokens,
        usage.output_tokens,
        cost,
        usage.latency_ms,
    )
    assert call.price_id == prices.price_in_force(usage.model).id
    assert snapshot(tenant_b) == EMPTY  # RLS hides all of it from another tenant


def test_investigation_is_completed_with_its_result_and_cost(tenant_a):
    result = run_investigation(payload(tenant_a, "investigation"))
    with tenant_context(tenant_a.id):
        job = Investigation.objects.get(id=result.investigation_id)
    assert job.status == JobStatus.COMPLETED
    assert job.query == "Why is Google Ads underperforming this month?"
    assert job.result["question"] == job.query
    assert job.result == result.result
    assert (job.cost_micros, job.cost_cents) == (result.cost_micros, result.cost_cents)
    assert job.request_id == result.request_id


def test_budget_job_allocates_the_whole_budget_in_whole_cents(tenant_a):
    result = optimize_budget(
        payload(
            tenant_a,
            "budget_optimization",
            prompt={"total_budget_cents": 100_001, "channels": {"google_ads": 2, "meta_ads": 1, "email": 0}},
        )
    )
    with tenant_context(tenant_a.id):
        job = BudgetOptimizationJob.objects.get(id=result.job_id)
    assert job.status == JobStatus.COMPLETED
    allocation = job.recommendations["allocations_cents"]
    assert allocation == {"google_ads": 66_667, "meta_ads": 33_334, "email": 0}
    assert sum(allocation.values()) == 100_001
    assert job.cost_cents == result.cost_cents


def test_the_stub_is_deterministic(tenant_a):
    first = generate_explanation(payload(tenant_a, "explanation", correlation_id="same"))
    second = generate_explanation(payload(tenant_a, "explanation", correlation_id="same"))
    assert first.explanation == second.explanation
    assert (first.cost_micros, first.input_tokens, first.request_id) == (
        second.cost_micros,
        second.input_tokens,
        second.request_id,
    )


def test_the_model_and_the_internal_usage_knob_come_from_the_prompt(tenant_a):
    result = route_request(payload(tenant_a, prompt={"model": "test-large", "output_tokens": 12_345}))
    assert (result.model, result.output_tokens, result.cost_micros, result.cost_cents) == (
        "test-large",
        12_345,
        12_345,  # 1 µUSD per output token
        1,
    )
    assert snapshot(tenant_a)["breakdown"] == {
        "test-large": {"calls": 1, "cost_micros": 12_345, "cost_cents": 1}
    }


def test_a_cost_knob_in_the_prompt_sets_nothing(tenant_a):
    """`simulated_cost_cents` is gone: the price catalogue alone decides what a call costs."""
    plain = route_request(payload(tenant_a, prompt={"q": 1}))
    knobbed = route_request(payload(tenant_a, prompt={"q": 1, "simulated_cost_cents": 2147483647}))
    assert knobbed.cost_micros < 10_000 and plain.model == knobbed.model


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_forced_failure_after_the_insert_leaves_nothing(endpoint, tenant_a):
    route_request(payload(tenant_a))  # an existing month row
    before = snapshot(tenant_a)
    with pytest.raises(ForcedFailure):
        STUB_WORKERS[endpoint](payload(tenant_a, endpoint), force_failure=True)
    assert snapshot(tenant_a) == before


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_the_same_request_id_twice_records_one_call_and_one_increment(endpoint, tenant_a):
    data = payload_data(tenant_a.id, endpoint, request_id="retry-me")
    first = STUB_WORKERS[endpoint](LLMTaskPayload.parse(data))
    again = STUB_WORKERS[endpoint](LLMTaskPayload.parse({**data, "correlation_id": "another-delivery"}))
    assert (first.recorded, again.recorded) == (True, False)
    assert again.api_call_id == first.api_call_id
    state = snapshot(tenant_a)
    assert (state["calls"], state["month_calls"], state["month_cost"]) == (1, 1, first.cost_micros)
    assert state["investigations"] + state["budget_jobs"] == (
        endpoint in {"investigation", "budget_optimization"}
    )
    if endpoint == "investigation":
        assert again.investigation_id == first.investigation_id
    if endpoint == "budget_optimization":
        assert again.job_id == first.job_id


def test_the_same_request_id_in_two_tenants_is_two_calls(tenant_a, tenant_b):
    route_request(payload(tenant_a, request_id="shared"))
    assert route_request(payload(tenant_b, request_id="shared")).recorded is True
    assert snapshot(tenant_a)["calls"] == snapshot(tenant_b)["calls"] == 1


def test_an_unknown_tenant_gets_a_clear_error_and_nothing_is_written(tenant_a):
    ghost = "00000000-0000-4000-8000-000000000000"
    with pytest.raises(UnknownTenant, match=f"Unknown tenant {ghost}"):
        run_investigation(LLMTaskPayload.parse(payload_data(ghost, "investigation")))
    # Look as the owner inside the ghost's context: any row written for it would show here.
    with tenant_context(ghost, using="owner"), connections["owner"].cursor() as cursor:
        cursor.execute("SELECT count(*) FROM llm_api_calls")
        assert cursor.fetchone()[0] == 0


def test_a_call_over_max_cost_is_refused_before_writing(tenant_a):
    with pytest.raises(CostLimitExceeded, match="over max_cost_cents 0"):
        generate_explanation(payload(tenant_a, "explanation", max_cost_cents=0))
    assert snapshot(tenant_a) == EMPTY


@pytest.mark.parametrize(
    ("endpoint", "prompt", "problem"),
    [
        ("investigation", {"topic": "no question"}, "question: Field required"),
        ("investigation", {"question": ""}, "question: String should have at least 1 character"),
        ("budget_optimization", {"total_budget_cents": 0, "channels": {"a": 1}}, "total_budget_cents"),
        ("budget_optimization", {"total_budget_cents": 10, "channels": {}}, "channels"),
        ("budget_optimization", {"total_budget_cents": 10, "channels": {"a": -1}}, "channels.a"),
        ("route", {"output_tokens": -5}, "output_tokens"),
        ("route", {"model": "gpt-imaginary"}, "Unknown model 'gpt-imaginary'"),
    ],
)
def test_invalid_prompts_are_refused_before_writing(endpoint, prompt, problem, tenant_a):
    with pytest.raises(InvalidPayload, match=problem):
        STUB_WORKERS[endpoint](payload(tenant_a, endpoint, prompt=prompt))
    assert snapshot(tenant_a) == EMPTY


def test_negative_or_impossible_usage_is_refused_before_any_sql():
    with pytest.raises(ValueError, match="output_tokens must be an integer from 0"):
        LLMUsage("stub-small", 1, -1, 1)
    with pytest.raises(ValueError, match="cached_input_tokens cannot exceed input_tokens"):
        LLMUsage("stub-small", 1, 1, 1, cached_input_tokens=2)


def test_monthly_costs_accumulate_per_model(tenant_a):
    month = current_utc_month()
    with tenant_context(tenant_a.id):
        for model, cost in [("m1", 5_000), ("m2", 7_000), ("m1", 11_000)]:
            record_monthly_costs(
                tenant_id=tenant_a.id, month=month, model_label=model, cost_micros=cost, calls=1
            )
        row = LLMMonthlyCost.objects.get(month=month)
    # Cents from the exact totals: 2.3 cents is 2; m1's 1.6 cents is 2, m2's 0.7 cents is 1.
    assert (row.total_calls, row.total_cost_micros, row.total_cost_cents) == (3, 23_000, 2)
    assert row.model_breakdown == {
        "m1": {"calls": 2, "cost_micros": 16_000, "cost_cents": 2},
        "m2": {"calls": 1, "cost_micros": 7_000, "cost_cents": 1},
    }


def test_record_api_call_reports_an_existing_call(tenant_a):
    usage = LLMUsage("stub-small", 1, 2, 3)
    with tenant_context(tenant_a.id):
        first = record_api_call(tenant_id=tenant_a.id, endpoint="route", request_id="r1", usage=usage)
        second = record_api_call(tenant_id=tenant_a.id, endpoint="route", request_id="r1", usage=usage)
    assert first.created and not second.created
    assert (second.id, second.created_at) == (first.id, first.created_at)
    assert first.month == current_utc_month()
