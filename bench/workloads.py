"""The write workloads: one LLM call recorded by raw SQL (the baseline), by the service, and
in batches. Every workload's calls carry request ids `<tag>:<client>:<i>`, so the run can
check afterwards that each figure recorded exactly the calls it counted."""

import uuid
from collections.abc import Callable

import psycopg
from django.db import connection, connections
from psycopg.types.json import Jsonb

from bench.load import ClientFactory

MODELS = ("stub-small", "stub-medium", "stub-large")
PSYCOPG_DEFAULT_PREPARE_THRESHOLD = 5
ENDPOINT = "route"

# The service's two statements, as `llm.services.record_api_call` and `add_to_monthly_costs`
# send them; both are imported from there, so the baseline cannot drift from them.
SET_TENANT_SQL = "SELECT set_config('app.current_tenant_id', %s, true)"


def planned_call(client: int, i: int) -> tuple[str, int]:
    """A deterministic model and cost for the i-th call of a client."""
    return MODELS[(client + i) % len(MODELS)], 1 + (client * 31 + i * 7) % 97


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


# What the raw SQL baseline records for a call's usage (the stub worker derives these from
# the prompt; the statements are the same whatever the numbers).
RAW_INPUT_TOKENS, RAW_OUTPUT_TOKENS, RAW_LATENCY_MS = 10, 16, 80

# record(cursor, tenant=, model=, cost=, request_id=, correlation_id=) -> (id, created_at) of
# the new call row, or None when (tenant, request_id, endpoint) was already recorded.
RawRecorder = Callable[..., tuple | None]


def raw_recorder() -> RawRecorder:
    """The baseline's unit of work on a plain psycopg cursor, no Django code on the path:
    BEGIN, the tenant GUC, the call row, the monthly upsert with its jsonb breakdown, COMMIT.
    Shared by the per-call baseline here and the raw Celery task (bench.celery_app)."""
    from llm.services import utc_month
    from llm.sql import ADD_TO_MONTHLY_COSTS_SQL, INSERT_API_CALL_SQL

    def record(
        cursor: psycopg.Cursor,
        *,
        tenant: str,
        model: str,
        cost: int,
        request_id: str,
        correlation_id: str | None = None,
    ) -> tuple | None:
        with cursor.connection.transaction():
            cursor.execute(SET_TENANT_SQL, [tenant])
            cursor.execute(
                INSERT_API_CALL_SQL,
                [tenant, ENDPOINT, model, RAW_INPUT_TOKENS, RAW_OUTPUT_TOKENS, cost, RAW_LATENCY_MS,
                 False, request_id, correlation_id, None],
            )  # fmt: skip
            row = cursor.fetchone()
            if row is not None:
                breakdown = Jsonb({model: {"calls": 1, "cost_cents": cost}})
                cursor.execute(ADD_TO_MONTHLY_COSTS_SQL, [tenant, utc_month(row[1]), cost, 1, breakdown])
        return row

    return record


def baseline(*, tenants: list[str], tag: str) -> ClientFactory:
    """The per-call floor: BEGIN, the GUC set, the two statements and COMMIT through plain
    psycopg (server-side binding, statements prepared after five runs: psycopg's defaults,
    and the project's with DATABASE_PREPARED_STATEMENTS on), as the runtime role under RLS.
    No Django code on the path."""
    record = raw_recorder()

    def make(client: int):
        raw = thread_connection()
        cursor = psycopg.Cursor(raw)

        def op(i: int) -> None:
            model, cost = planned_call(client, i)
            # The connection is shared with the service workloads: psycopg's default threshold
            # for this op only, whatever the settings gave the connection.
            threshold, raw.prepare_threshold = raw.prepare_threshold, PSYCOPG_DEFAULT_PREPARE_THRESHOLD
            try:
                record(
                    cursor,
                    tenant=tenant_for(tenants, client, i),
                    model=model,
                    cost=cost,
                    request_id=f"{tag}:{client}:{i}",
                )
            finally:
                raw.prepare_threshold = threshold

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
            model, cost = planned_call(client, i)
            route_request(
                LLMTaskPayload(
                    tenant_id=tenant_for(tenants, client, i),
                    request_id=f"{tag}:{client}:{i}",
                    correlation_id=f"{tag}:{client}:{i}",
                    prompt={"request": "bench", "model": model, "simulated_cost_cents": cost},
                    max_cost_cents=1_000,
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
        model, cost = planned_call(client, n)
        payloads.append(
            {
                "tenant_id": tenant_for(tenants, client, n),
                "request_id": f"{tag}:{client}:{n}",
                "correlation_id": f"{tag}:{client}:{n}",
                "prompt": {"request": "bench", "model": model, "simulated_cost_cents": cost},
                "max_cost_cents": 1_000,
            }
        )
    return payloads


def batched(*, tenants: list[str], tag: str, size: int) -> ClientFactory:
    """`llm.services.record_api_calls_batch`: `size` calls per op, one transaction per tenant."""
    from llm.services import ApiCallToRecord, record_api_calls_batch
    from llm.stub_provider import LLMUsage

    def make(client: int):
        def op(i: int) -> None:
            calls = []
            for k in range(size):
                n = i * size + k
                model, cost = planned_call(client, n)
                calls.append(
                    ApiCallToRecord(
                        tenant_id=uuid.UUID(tenant_for(tenants, client, n)),
                        endpoint=ENDPOINT,
                        request_id=f"{tag}:{client}:{n}",
                        usage=LLMUsage(model, 10, 16, cost, 80),
                    )
                )
            record_api_calls_batch(calls=calls)

        return op, connections.close_all

    return make
