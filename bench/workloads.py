"""The write workloads: one LLM call recorded by raw SQL (the baseline), by the service, and
in batches. Every workload's calls carry request ids `<tag>:<client>:<i>`, so the run can
check afterwards that each figure recorded exactly the calls it counted."""

import datetime
import functools
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from django.db import connection, connections
from psycopg.types.json import Jsonb

from bench.load import ClientFactory
from llm.money import micros_to_cents
from llm.stub_provider import LLMUsage, usage_for

MODELS = ("stub-small", "stub-medium", "stub-large")
PSYCOPG_DEFAULT_PREPARE_THRESHOLD = 5
ENDPOINT = "route"
MAX_COST_CENTS = 1_000  # each call's cap; the dearest benchmark call costs ~15 cents

# The service's two statements, as `llm.services.record_api_call` and `add_to_monthly_costs`
# send them; both are imported from there, so the baseline cannot drift from them.
SET_TENANT_SQL = "SELECT set_config('app.current_tenant_id', %s, true)"


def planned_call(client: int, i: int) -> tuple[str, int]:
    """A deterministic model and output token count for the i-th call of a client. With the
    stub prices (migration 0007) a call costs from a few µUSD to ~15 cents (stub-large, 2,003
    output tokens); every stub-small call and about half the stub-medium ones cost under a
    cent, so monthly totals are sums of amounts that cents could not hold."""
    return MODELS[(client + i) % len(MODELS)], 1 + (client * 31 + i * 7) % 2003


def prompt_for(model: str, output_tokens: int) -> dict:
    """The prompt every benchmark call sends: the stub's `model` and `output_tokens` knobs."""
    return {"request": "bench", "model": model, "output_tokens": output_tokens}


@functools.cache
def call_usage(model: str, output_tokens: int) -> LLMUsage:
    """The usage the route stub worker derives from `prompt_for(model, output_tokens)`
    (input tokens from the prompt's size, a cached share of them, the output tokens asked
    for, latency). Computed once per pair, so the raw-SQL baselines record exactly the numbers
    the service records for the same call without paying for the stub's Python each call."""
    return usage_for(ENDPOINT, prompt_for(model, output_tokens), model=model, output_tokens=output_tokens)


def tenant_for(tenants: list[str], client: int, i: int) -> str:
    # Clients walk the tenants from different offsets: with 1,000 tenants, concurrent calls
    # rarely meet on a monthly row; with one, they all do.
    return tenants[(client * 7919 + i) % len(tenants)]


def thread_connection() -> psycopg.Connection:
    """This thread's database connection as plain psycopg: the one Django opens per thread.

    Every write workload of a client thread runs on it, so the baseline and the service
    share one server backend (same caches), and a client holds one connection, not one per
    workload: this server is shared, and 32 clients x 3 workloads would crowd others out.
    """
    connection.ensure_connection()
    return connection.connection


# record(cursor, tenant=, usage=, request_id=, correlation_id=) -> (id, created_at, cost_micros,
# price_id) of the new call row, or None when (tenant, request_id, endpoint) was already
# recorded (or the model had no price in force: nothing inserted either way).
RawRecorder = Callable[..., tuple | None]


def call_row_params(tenant: str, usage: LLMUsage, request_id: str, correlation_id: str | None) -> dict:
    """INSERT_API_CALL_SQL's parameters, as `llm.services.record_api_call` sends them."""
    return {
        "tenant_id": tenant,
        "endpoint": ENDPOINT,
        "model": usage.model,
        "input_tokens": usage.input_tokens,
        "cached_input_tokens": usage.cached_input_tokens,
        "output_tokens": usage.output_tokens,
        "latency_ms": usage.latency_ms,
        "was_cached": False,
        "request_id": request_id,
        "correlation_id": correlation_id,
        "request_metadata": None,
    }


def raw_recorder() -> RawRecorder:
    """The baseline's unit of work on a plain psycopg cursor, no Django code on the path:
    whether the tenant has a budget (it has none: the baseline is an unbudgeted call), BEGIN,
    the tenant GUC, the priced call row, the µUSD monthly upsert with its jsonb
    breakdown, COMMIT: the service's statements from llm.sql with the parameters
    `llm.services.record_api_call` and `add_to_monthly_costs` send. Shared by the per-call
    baseline here, the raw Celery task (bench.celery_app) and bench.cpu_profile."""
    from llm.services import utc_month
    from llm.sql import ADD_TO_MONTHLY_COSTS_SQL, INSERT_API_CALL_SQL, TENANT_HAS_BUDGET_SQL

    def record(
        cursor: psycopg.Cursor,
        *,
        tenant: str,
        usage: LLMUsage,
        request_id: str,
        correlation_id: str | None = None,
    ) -> tuple | None:
        cursor.execute(TENANT_HAS_BUDGET_SQL, [tenant])
        if cursor.fetchone() is not None:
            raise RuntimeError(f"tenant {tenant} has a budget: the raw baseline records unbudgeted calls")
        with cursor.connection.transaction():
            cursor.execute(SET_TENANT_SQL, [tenant])
            cursor.execute(INSERT_API_CALL_SQL, call_row_params(tenant, usage, request_id, correlation_id))
            row = cursor.fetchone()
            if row is not None:
                micros = row[2]
                cents = micros_to_cents(micros)
                breakdown = Jsonb({usage.model: {"calls": 1, "cost_micros": micros, "cost_cents": cents}})
                cursor.execute(
                    ADD_TO_MONTHLY_COSTS_SQL, [tenant, utc_month(row[1]), micros, cents, 1, breakdown]
                )
        return row

    return record


def baseline(*, tenants: list[str], tag: str) -> ClientFactory:
    """The per-call floor: BEGIN, the GUC set, the two statements and COMMIT through plain
    psycopg (server-side binding, statements prepared after five runs: psycopg's defaults,
    and the project's with DATABASE_PREPARED_STATEMENTS on), as the runtime role under RLS,
    with the same usage (so the same price lookup and cost) the service records for the same
    call. No Django code on the path."""
    record = raw_recorder()

    def make(client: int):
        raw = thread_connection()
        cursor = psycopg.Cursor(raw)

        def op(i: int) -> None:
            request_id = f"{tag}:{client}:{i}"
            usage = call_usage(*planned_call(client, i))
            # The connection is shared with the service workloads: psycopg's default threshold
            # for this op only, whatever the settings gave the connection.
            threshold, raw.prepare_threshold = raw.prepare_threshold, PSYCOPG_DEFAULT_PREPARE_THRESHOLD
            try:
                row = record(
                    cursor,
                    tenant=tenant_for(tenants, client, i),
                    usage=usage,
                    request_id=request_id,
                    correlation_id=request_id,
                )
            finally:
                raw.prepare_threshold = threshold
            if row is None:  # request ids are never reused: the model had no price in force
                raise RuntimeError(f"{request_id}: nothing recorded, {usage.model!r} has no price in force")

        return op, connections.close_all

    return make


def service(*, tenants: list[str], tag: str) -> ClientFactory:
    """The service path a worker runs for one call: the validated payload into the route stub
    worker (usage, the tenant context, the two statements, the commit, the receipt), with
    the project's database settings as they are."""
    from llm.payloads import LLMTaskPayload
    from llm.services import route_request

    def make(client: int):
        def op(i: int) -> None:
            route_request(
                LLMTaskPayload(
                    tenant_id=tenant_for(tenants, client, i),
                    request_id=f"{tag}:{client}:{i}",
                    correlation_id=f"{tag}:{client}:{i}",
                    prompt=prompt_for(*planned_call(client, i)),
                    max_cost_cents=MAX_COST_CENTS,
                )
            )

        return op, connections.close_all

    return make


def service_client_binding(*, tenants: list[str], tag: str) -> ClientFactory:
    """The service path as it runs with DATABASE_PREPARED_STATEMENTS=false (Django's own
    defaults): Django's cursors bind parameters on the client and psycopg prepares nothing, so
    the server parses and plans every statement. Emulated on this thread's connection for the
    op only (the cursor class and threshold Django would have given it), so it rotates with
    the other workloads on the same connection: a comparison, not the project's setting."""
    from django.db.backends.postgresql.base import Cursor as ClientBindingCursor

    inner = service(tenants=tenants, tag=tag)

    def make(client: int):
        op, close = inner(client)

        def client_binding_op(i: int) -> None:
            raw = thread_connection()
            factory, threshold = raw.cursor_factory, raw.prepare_threshold
            raw.cursor_factory, raw.prepare_threshold = ClientBindingCursor, None
            try:
                op(i)
            finally:
                raw.cursor_factory, raw.prepare_threshold = factory, threshold

        return client_binding_op, close

    return make


def batch_payloads(*, tenants: list[str], tag: str, client: int, i: int, size: int) -> list[dict]:
    """One batch of `size` call payloads as JSON, as a client would send them to the batch task."""
    payloads = []
    for k in range(size):
        n = i * size + k
        payloads.append(
            {
                "tenant_id": tenant_for(tenants, client, n),
                "request_id": f"{tag}:{client}:{n}",
                "correlation_id": f"{tag}:{client}:{n}",
                "prompt": prompt_for(*planned_call(client, n)),
                "max_cost_cents": MAX_COST_CENTS,
            }
        )
    return payloads


def batched(*, tenants: list[str], tag: str, size: int) -> ClientFactory:
    """`llm.services.record_api_calls_batch`: `size` calls per op, one transaction per tenant."""
    from llm.services import ApiCallToRecord, record_api_calls_batch

    def make(client: int):
        def op(i: int) -> None:
            calls = []
            for k in range(size):
                n = i * size + k
                calls.append(
                    ApiCallToRecord(
                        tenant_id=uuid.UUID(tenant_for(tenants, client, n)),
                        endpoint=ENDPOINT,
                        request_id=f"{tag}:{client}:{n}",
                        usage=call_usage(*planned_call(client, n)),
                        correlation_id=f"{tag}:{client}:{n}",
                    )
                )
            record_api_calls_batch(calls=calls)

        return op, connections.close_all

    return make


@dataclass(frozen=True)
class CapBurst:
    cap_micros: int
    estimate_micros: int  # of each call: the cap fits cap // estimate of them at once
    admitted: int
    blocked: int


def cap_burst(*, tenant: str, tag: str, clients: int, calls_fitting: int) -> CapBurst:
    """`clients` threads (each its own connection) call `route_request` for one budgeted
    tenant at once, each until its first BudgetExceeded, against a monthly cap that holds
    `calls_fitting` call estimates. The exactness check then finds whether the cap held."""
    from llm.payloads import LLMTaskPayload
    from llm.services import BudgetExceeded, route_request, set_budget
    from llm.services.budgets import estimate_micros

    model, output_tokens = MODELS[0], 500
    now = datetime.datetime.now(datetime.UTC)
    estimate = estimate_micros(model=model, usage=call_usage(model, output_tokens), at=now)
    cap = estimate * calls_fitting
    set_budget(tenant_id=uuid.UUID(tenant), monthly_cap_micros=cap)
    admitted, blocked = [0] * clients, [0] * clients
    barrier = threading.Barrier(clients)

    def client(index: int) -> None:
        try:
            barrier.wait()
            for i in range(10 * calls_fitting):
                try:
                    route_request(
                        LLMTaskPayload(
                            tenant_id=tenant,
                            request_id=f"{tag}:{index}:{i}",
                            prompt=prompt_for(model, output_tokens),
                            max_cost_cents=MAX_COST_CENTS,
                        )
                    )
                except BudgetExceeded:
                    blocked[index] += 1
                    return
                admitted[index] += 1
        finally:
            connection.close()

    threads = [threading.Thread(target=client, args=(index,)) for index in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return CapBurst(cap, estimate, sum(admitted), sum(blocked))
