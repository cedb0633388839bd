"""Concurrent writers lose nothing: every call and every cent is counted exactly once.

Each thread has its own database connection (Django's are per thread) and commits its own
transactions, so the monthly row really is contended.
"""

import threading
from collections import Counter

import pytest
from django.db import connections

from llm.models import LLMApiCall, LLMMonthlyCost
from llm.money import micros_to_cents
from llm.payloads import LLMTaskPayload
from llm.selectors import current_utc_month
from llm.services import STUB_WORKERS
from llm.tests.factories import TEST_MODELS, payload_data
from skeldir.tenancy import tenant_context

pytestmark = pytest.mark.django_db(transaction=True)

THREADS, CALLS_PER_THREAD = 32, 25
MODELS = list(TEST_MODELS)  # 1 µUSD per output token
ENDPOINTS = ["route", "explanation"]


def planned_call(tenant_id, thread: int, index: int) -> tuple[str, LLMTaskPayload]:
    endpoint = ENDPOINTS[index % 2]
    model = MODELS[(thread + index) % 3]
    data = payload_data(
        tenant_id,
        endpoint,
        request_id=f"t{thread}-c{index}",
        # Sub-cent costs: only exact µUSD sums, and cents derived from them, come out right.
        prompt={"model": model, "output_tokens": 137 * (1 + (thread * 31 + index * 7) % 97)},
    )
    return endpoint, LLMTaskPayload.parse(data)


def run_concurrently(tenants) -> dict:
    """32 threads x 25 calls; thread i works for tenants[i % len(tenants)]. Returns the
    expected totals per tenant: calls, µUSD and the per-model breakdown."""
    expected = {t.id: {"calls": 0, "cost": 0, "models": Counter(), "model_cost": Counter()} for t in tenants}
    plans = []
    for thread in range(THREADS):
        tenant_id = tenants[thread % len(tenants)].id
        calls = [planned_call(tenant_id, thread, i) for i in range(CALLS_PER_THREAD)]
        plans.append(calls)
        for _, p in calls:
            totals = expected[tenant_id]
            totals["calls"] += 1
            totals["cost"] += p.prompt["output_tokens"]
            totals["models"][p.prompt["model"]] += 1
            totals["model_cost"][p.prompt["model"]] += p.prompt["output_tokens"]

    start, errors = threading.Barrier(THREADS, timeout=30), []

    def work(calls):
        try:
            start.wait()
            for endpoint, p in calls:
                STUB_WORKERS[endpoint](p)
        except Exception as error:  # reported below
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work, args=(calls,)) for calls in plans]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors[:3]
    return expected


def assert_exact(tenant, expected) -> None:
    with tenant_context(tenant.id):
        calls = list(LLMApiCall.objects.values_list("model", "cost_micros"))
        month = LLMMonthlyCost.objects.get(month=current_utc_month())
    assert len(calls) == expected["calls"]
    assert sum(cost for _, cost in calls) == expected["cost"]
    assert month.total_calls == expected["calls"]
    assert month.total_cost_micros == expected["cost"]
    assert month.total_cost_cents == micros_to_cents(expected["cost"])  # from the exact total
    assert month.model_breakdown == {
        model: {
            "calls": expected["models"][model],
            "cost_micros": expected["model_cost"][model],
            "cost_cents": micros_to_cents(expected["model_cost"][model]),
        }
        for model in expected["models"]
    }


def test_32_threads_x_25_calls_on_one_tenant_are_counted_exactly(tenant_a):
    expected = run_concurrently([tenant_a])
    assert expected[tenant_a.id]["calls"] == 800
    assert_exact(tenant_a, expected[tenant_a.id])


def test_the_same_across_four_tenants_at_once(tenant_factory):
    tenants = [tenant_factory.create() for _ in range(4)]
    expected = run_concurrently(tenants)
    for tenant in tenants:
        assert expected[tenant.id]["calls"] == 200
        assert_exact(tenant, expected[tenant.id])


def test_concurrent_redeliveries_of_the_same_calls_count_once(tenant_a):
    expected = run_concurrently([tenant_a])
    run_concurrently([tenant_a])  # every call delivered a second time, concurrently
    assert_exact(tenant_a, expected[tenant_a.id])
