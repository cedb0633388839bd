"""Batched ingest: many calls, one transaction per tenant, each call and each cent counted
exactly once, whatever is replayed, overlaps or runs at the same time.

Against the real database as the runtime role; concurrent tests use one connection per
thread, each committing its own transactions.
"""

import random
import re
import threading
import uuid
from collections import Counter

import pytest
from django.core.management import CommandError, call_command
from django.db import DataError, connections

from llm import stub_provider, tasks
from llm.models import LLMApiCall, LLMMonthlyCost
from llm.money import micros_to_cents
from llm.payloads import LLMTaskPayload
from llm.selectors import current_utc_month
from llm.services import (
    BATCH_MAX_CALLS,
    ApiCallToRecord,
    CostLimitExceeded,
    InvalidBatch,
    RecordedBatch,
    UnknownTenant,
    record_api_calls_batch,
    route_request,
)
from llm.stub_provider import LLMUsage
from llm.tests.factories import TEST_MODELS, create_tenant_row, expected_cost_micros, payload_data
from skeldir.tenancy import current_tenant_id, tenant_context

pytestmark = pytest.mark.django_db(transaction=True)

MODELS = list(TEST_MODELS)  # 1 µUSD per output token: a call's cost is its output tokens


def call(tenant, request_id: str, *, cost: int = 3, model: str = "test-small", **fields) -> ApiCallToRecord:
    """A call costing `cost` µUSD (its output tokens, on a test model)."""
    return ApiCallToRecord(
        tenant_id=tenant.id,
        endpoint=fields.pop("endpoint", "route"),
        request_id=request_id,
        usage=LLMUsage(model, 10, cost, 80),
        **fields,
    )


def some_calls(tenant, prefix: str, count: int) -> list[ApiCallToRecord]:
    return [call(tenant, f"{prefix}-{i}", cost=1 + i % 7, model=MODELS[i % 3]) for i in range(count)]


def expected_month(calls: list[ApiCallToRecord]) -> dict:
    """What the month must show for these distinct calls: totals and the per-model breakdown."""
    breakdown = {}
    for c in calls:
        entry = breakdown.setdefault(c.usage.model, {"calls": 0, "cost_micros": 0})
        entry["calls"] += 1
        entry["cost_micros"] += c.usage.output_tokens
    for entry in breakdown.values():
        entry["cost_cents"] = micros_to_cents(entry["cost_micros"])
    return {
        "calls": len(calls),
        "cost": sum(c.usage.output_tokens for c in calls),
        "breakdown": breakdown,
    }


def recorded(tenant) -> dict:
    """What the tenant sees: its call rows' keys, and its month as totals and breakdown."""
    with tenant_context(tenant.id):
        keys = Counter(LLMApiCall.objects.values_list("request_id", "endpoint"))
        month = LLMMonthlyCost.objects.filter(month=current_utc_month()).first()
    return {
        "keys": keys,
        "calls": month.total_calls if month else 0,
        "cost": month.total_cost_micros if month else 0,
        "breakdown": month.model_breakdown if month else {},
    }


def assert_exactly(tenant, calls: list[ApiCallToRecord]) -> None:
    """The tenant has each of `calls` once, and its month adds up exactly those."""
    seen = recorded(tenant)
    assert seen["keys"] == Counter((c.request_id, c.endpoint) for c in calls)
    assert {k: seen[k] for k in ("calls", "cost", "breakdown")} == expected_month(calls)


def test_a_batch_records_every_call_of_every_tenant_and_adds_exactly_their_costs(tenant_a, tenant_b):
    a_calls, b_calls = some_calls(tenant_a, "a", 25), some_calls(tenant_b, "b", 10)
    mixed = [c for pair in zip(a_calls, b_calls, strict=False) for c in pair] + a_calls[10:]

    result = record_api_calls_batch(calls=mixed)

    assert result == RecordedBatch(
        recorded=35,
        already_recorded=0,
        cost_micros=sum(c.usage.output_tokens for c in mixed),
        tenants=2,
    )
    assert_exactly(tenant_a, a_calls)
    assert_exactly(tenant_b, b_calls)


def test_a_batch_stores_each_call_as_given(tenant_a):
    given = call(
        tenant_a,
        "detailed",
        cost=42,
        model="test-large",
        endpoint="explanation",
        correlation_id="corr-1",
        was_cached=True,
        request_metadata={"source": "ingest", "quote": 'it\'s "quoted"'},
    )
    record_api_calls_batch(calls=[given, call(tenant_a, "plain")])
    with tenant_context(tenant_a.id):
        row = LLMApiCall.objects.get(request_id="detailed")
        plain = LLMApiCall.objects.get(request_id="plain")
    assert (
        row.endpoint,
        row.model,
        row.input_tokens,
        row.output_tokens,
        row.cost_micros,
        row.latency_ms,
    ) == (
        "explanation",
        "test-large",
        10,
        42,
        42,
        80,
    )
    assert row.price_id is not None
    assert (row.correlation_id, row.was_cached, row.request_metadata) == (
        "corr-1",
        True,
        {"source": "ingest", "quote": 'it\'s "quoted"'},
    )
    assert (plain.correlation_id, plain.was_cached, plain.request_metadata) == (None, False, None)


def test_a_replayed_batch_changes_nothing(tenant_a, tenant_b):
    batch = some_calls(tenant_a, "a", 20) + some_calls(tenant_b, "b", 5)
    record_api_calls_batch(calls=batch)
    before = recorded(tenant_a), recorded(tenant_b)

    replay = record_api_calls_batch(calls=list(reversed(batch)))

    assert replay == RecordedBatch(recorded=0, already_recorded=25, cost_micros=0, tenants=2)
    assert (recorded(tenant_a), recorded(tenant_b)) == before


def test_a_batch_overlapping_calls_already_recorded_adds_only_the_new_ones(tenant_a):
    earlier_batch = some_calls(tenant_a, "batch", 10)
    record_api_calls_batch(calls=earlier_batch)
    single = LLMTaskPayload.parse(
        payload_data(tenant_a.id, prompt={"model": "test-small", "output_tokens": 9})
    )
    route_request(single)  # one call recorded the per-call way
    single_call = call(tenant_a, single.request_id_for("route"), cost=9, model="test-small")
    new = some_calls(tenant_a, "new", 6)

    result = record_api_calls_batch(calls=[*earlier_batch[3:8], single_call, *new])

    assert (result.recorded, result.already_recorded) == (6, 6)
    assert result.cost_micros == sum(c.usage.output_tokens for c in new)
    assert_exactly(tenant_a, [*earlier_batch, single_call, *new])


def test_the_same_call_twice_in_one_batch_counts_once(tenant_a):
    calls = some_calls(tenant_a, "a", 4)
    result = record_api_calls_batch(calls=[*calls, calls[1], calls[1]])
    assert (result.recorded, result.already_recorded) == (4, 2)
    assert_exactly(tenant_a, calls)


def test_the_same_request_id_on_two_endpoints_is_two_calls(tenant_a):
    calls = [call(tenant_a, "shared", endpoint="route"), call(tenant_a, "shared", endpoint="explanation")]
    assert record_api_calls_batch(calls=calls).recorded == 2
    assert_exactly(tenant_a, calls)


def test_concurrent_overlapping_batches_neither_deadlock_nor_count_twice(tenant_a, tenant_b):
    """Eight threads at once, each recording an overlapping, shuffled mix of the same calls of
    two tenants (some of them the per-call way): inserts meet on the same keys and batches on
    the same monthly rows. A lock-order cycle would end one of them in a deadlock error."""
    pool = {tenant_a.id: some_calls(tenant_a, "a", 60), tenant_b.id: some_calls(tenant_b, "b", 60)}
    everything = pool[tenant_a.id] + pool[tenant_b.id]
    threads_count, rounds = 8, 3
    plans = []
    for thread in range(threads_count):
        rng = random.Random(thread)
        plans.append([rng.sample(everything, 70) for _ in range(rounds)])
    singles = [
        LLMTaskPayload.parse(
            payload_data(
                tenant_a.id,
                request_id=c.request_id,
                prompt={"model": c.usage.model, "output_tokens": c.usage.output_tokens},
            )
        )
        for c in pool[tenant_a.id][:20]
    ]
    start, errors, results = threading.Barrier(threads_count + 1, timeout=30), [], []

    def record_batches(batches):
        try:
            start.wait()
            for batch in batches:
                results.append(record_api_calls_batch(calls=batch))
        except Exception as error:  # reported below
            errors.append(error)
        finally:
            connections.close_all()

    def record_singly():
        try:
            start.wait()
            for payload in singles:
                route_request(payload)
        except Exception as error:
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=record_batches, args=(plan,)) for plan in plans]
    threads.append(threading.Thread(target=record_singly))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert not errors, errors[:3]
    touched = {(c.tenant_id, c.request_id) for plan in plans for batch in plan for c in batch}
    touched |= {(tenant_a.id, p.request_id) for p in singles}
    for tenant in (tenant_a, tenant_b):
        expected = [c for c in pool[tenant.id] if (tenant.id, c.request_id) in touched]
        assert_exactly(tenant, expected)
    newly_by_batches = sum(r.recorded for r in results)
    assert newly_by_batches <= len(touched)  # each call was new to exactly one writer


def test_each_tenant_sees_only_its_own_calls_and_month(tenant_a, tenant_b, tenant_factory):
    bystander = tenant_factory.create(name="Bystander")
    record_api_calls_batch(calls=some_calls(tenant_a, "a", 5) + some_calls(tenant_b, "b", 3))
    assert recorded(bystander) == {"keys": Counter(), "calls": 0, "cost": 0, "breakdown": {}}
    assert set(recorded(tenant_a)["keys"]) == {(f"a-{i}", "route") for i in range(5)}
    assert set(recorded(tenant_b)["keys"]) == {(f"b-{i}", "route") for i in range(3)}
    assert LLMApiCall.objects.count() == 0  # with no tenant set, nothing is visible


def test_a_batch_enters_each_calls_tenant_and_leaves_the_callers_tenant_in_force(tenant_a, tenant_b):
    with tenant_context(tenant_b.id):
        record_api_calls_batch(calls=some_calls(tenant_a, "a", 4))
        assert current_tenant_id() == tenant_b.id
        assert LLMApiCall.objects.count() == 0  # tenant B sees none of tenant A's calls
    assert current_tenant_id() is None
    assert_exactly(tenant_a, some_calls(tenant_a, "a", 4))


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (lambda a: "not a call", "calls[2]: expected an ApiCallToRecord"),
        (lambda a: call(a, "   "), "calls[2]: request_id must be a non-blank string"),
        (lambda a: call(a, "x", endpoint=""), "calls[2]: endpoint must be a non-blank string"),
        (lambda a: ApiCallToRecord(str(a.id), "route", "x", LLMUsage("m", 1, 1, 1)), "tenant_id must be"),
        (lambda a: call(a, "x", was_cached="yes"), "calls[2]: was_cached must be a bool"),
        (lambda a: call(a, "x", request_metadata=[1]), "calls[2]: request_metadata must be a dict"),
        (
            lambda a: call(a, "ok-0", cost=99),
            "calls[2] repeats the tenant, request_id and endpoint of calls[0]",
        ),
    ],
)
def test_an_invalid_call_fails_the_batch_with_a_clear_error_and_writes_nothing(
    bad, message, tenant_a, tenant_b
):
    batch = [call(tenant_a, "ok-0"), call(tenant_b, "ok-1"), bad(tenant_a), call(tenant_a, "ok-2")]
    with pytest.raises(InvalidBatch, match=re.escape(message)):
        record_api_calls_batch(calls=batch)
    assert_exactly(tenant_a, [])
    assert_exactly(tenant_b, [])


def test_an_unknown_tenant_fails_the_batch_and_writes_nothing(tenant_a):
    stranger = uuid.uuid4()
    batch = [
        call(tenant_a, "ok"),
        ApiCallToRecord(stranger, "route", "x", LLMUsage("stub-small", 1, 1, 1)),
    ]
    with pytest.raises(UnknownTenant, match=str(stranger)):
        record_api_calls_batch(calls=batch)
    assert_exactly(tenant_a, [])


def test_an_oversized_batch_is_refused(tenant_a):
    with pytest.raises(InvalidBatch, match=f"at most {BATCH_MAX_CALLS}"):
        record_api_calls_batch(calls=some_calls(tenant_a, "a", BATCH_MAX_CALLS + 1))
    assert_exactly(tenant_a, [])


def test_a_tenant_whose_transaction_fails_keeps_nothing_and_a_replay_records_it_once(tenant_a, tenant_b):
    # Tenant B's month is one call short of the column's limit: adding two fails in the
    # database, after B's call rows went in, and B's transaction must take them back.
    create_tenant_row(
        LLMMonthlyCost,
        tenant=tenant_b,
        month=current_utc_month(),
        total_calls=2**31 - 2,
        total_cost_micros=0,
        total_cost_cents=0,
        model_breakdown={},
    )
    a_calls, b_calls = some_calls(tenant_a, "a", 3), some_calls(tenant_b, "b", 2)
    with pytest.raises(DataError):
        record_api_calls_batch(calls=a_calls + b_calls)
    assert recorded(tenant_b)["keys"] == Counter()
    assert recorded(tenant_b)["calls"] == 2**31 - 2

    with tenant_context(tenant_b.id):  # the cause goes away
        LLMMonthlyCost.objects.filter(month=current_utc_month()).update(total_calls=0)
    record_api_calls_batch(calls=a_calls + b_calls)  # the replay
    assert_exactly(tenant_a, a_calls)
    assert_exactly(tenant_b, b_calls)


# --- the Celery task and the command ------------------------------------------------------------


def test_the_batch_task_has_a_stable_name_on_the_llm_queue():
    from skeldir.celery import app

    assert tasks.record_calls_batch.name == "llm.record_calls_batch" == tasks.BATCH_TASK_NAME
    assert app.amqp.router.route({}, tasks.BATCH_TASK_NAME)["queue"].name == "llm"
    assert tasks.record_calls_batch.acks_late is True


def test_the_batch_task_records_its_payloads_with_their_stub_usage_once(tenant_a, tenant_b):
    payloads = [payload_data(tenant.id, "explanation") for tenant in (tenant_a, tenant_b, tenant_a)]
    del payloads[2]["correlation_id"]  # derived from the task id and its place in the batch

    first = tasks.record_calls_batch.apply(args=[payloads], kwargs={"endpoint": "explanation"}, task_id="t-1")
    again = tasks.record_calls_batch.apply(args=[payloads], kwargs={"endpoint": "explanation"}, task_id="t-1")

    assert first.successful(), first.traceback
    costs = [expected_cost_micros(stub_provider.usage_for("explanation", p["prompt"])) for p in payloads]
    # Counts only: the result backend stores this outside the tenants' rows (no cost).
    assert first.result == {"calls": 3, "recorded": 3, "already_recorded": 0, "tenants": 2}
    assert (again.result["recorded"], again.result["already_recorded"]) == (0, 3)
    assert recorded(tenant_a)["cost"] == costs[0] + costs[2]
    assert recorded(tenant_b)["calls"] == 1


@pytest.mark.parametrize(
    ("payload_overrides", "kwargs", "error", "message"),
    [
        ({"max_cost_cents": -1}, {}, InvalidBatch, r"payloads\[1\]: .*max_cost_cents"),
        ({"unexpected": 1}, {}, InvalidBatch, r"payloads\[1\]: .*unexpected"),
        ({"max_cost_cents": 0}, {}, CostLimitExceeded, r"payloads\[1\]: The route call could cost"),
        ({}, {"endpoint": "investigation"}, InvalidBatch, "cannot be batched"),
    ],
)
def test_an_invalid_batch_task_fails_at_once_writes_nothing_and_is_not_retried(
    payload_overrides, kwargs, error, message, tenant_a
):
    payloads = [payload_data(tenant_a.id), payload_data(tenant_a.id, **payload_overrides)]
    result = tasks.record_calls_batch.apply(args=[payloads], kwargs=kwargs)
    assert result.failed()
    assert isinstance(result.result, error)
    assert re.search(message, str(result.result))
    assert result.traceback.count("Retry") == 0
    assert_exactly(tenant_a, [])


def test_the_batch_task_refuses_an_empty_or_malformed_list():
    for bad in ([], "not a list", [None]):
        result = tasks.record_calls_batch.apply(args=[bad])
        assert isinstance(result.result, InvalidBatch)


def test_run_llm_stub_records_calls_in_batches(tenant_a, capsys):
    call_command("run_llm_stub", "--tenant", str(tenant_a.id), "--count", "7", "--batch-size", "3")
    out = capsys.readouterr().out
    assert "in 6 batch task(s) of up to 3 call(s)" in out  # route and explanation, 3 + 3 + 1 each
    assert "investigation" not in out.split("Finished")[1].split("\n\n")[0]
    with tenant_context(tenant_a.id):
        assert Counter(LLMApiCall.objects.values_list("endpoint", flat=True)) == {
            "route": 7,
            "explanation": 7,
        }
    assert recorded(tenant_a)["calls"] == 14


def test_run_llm_stub_refuses_to_batch_job_kinds(tenant_a):
    with pytest.raises(CommandError, match="not batched"):
        call_command(
            "run_llm_stub", "--tenant", str(tenant_a.id), "--kind", "investigation", "--batch-size", "2"
        )
    with pytest.raises(CommandError, match="at least 1"):
        call_command("run_llm_stub", "--tenant", str(tenant_a.id), "--batch-size", "0")
    assert_exactly(tenant_a, [])
