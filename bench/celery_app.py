"""The Celery app the benchmark's workers run: the project's app and tasks, with the project's
worker configuration (skeldir/celery.py: connections reused across tasks), plus two baseline
tasks registered here only, so production workers never carry them:

- `bench.noop` takes an LLM task's payload and returns at once: broker, worker, result backend
  and the project's task signals, without work;
- `bench.raw_route` takes `llm.route`'s payload and records the call as the per-call raw SQL
  baseline does (bench.workloads.raw_recorder), on a psycopg connection of its own kept for
  the life of the worker process, and returns a dict with `llm.route`'s keys: the floor of a
  per-call task that does the same unit of work, with no Django, pydantic or service code.

    celery -A bench.celery_app worker -Q llm
"""

import os

import django
import psycopg
from django.conf import settings

from skeldir.celery import app

django.setup()  # before llm.tasks (models): the worker imports this module before Celery does it

from bench.workloads import ENDPOINT, call_usage, raw_recorder  # noqa: E402
from llm.stub_provider import DEFAULT_MODEL, OUTPUT_TOKENS  # noqa: E402
from llm.tasks import LLMTask  # noqa: E402

__all__ = ["app"]

NOOP_TASK_NAME = "bench.noop"
RAW_TASK_NAME = "bench.raw_route"
RAW_DEFAULT_MODEL = DEFAULT_MODEL[ENDPOINT]  # the stub's model and output tokens for a route call
RAW_DEFAULT_OUTPUT_TOKENS = OUTPUT_TOKENS[ENDPOINT]


@app.task(name=NOOP_TASK_NAME)
def noop(payload: dict) -> dict:
    """The same message and result round trip as an LLM task, and no work: what the broker,
    the worker and the result backend cost by themselves. Settings give it the LLM tasks'
    delivery options (acks_late, reject_on_worker_lost, prefetch 1) and the `llm` queue."""
    return {"ok": True}


class _RawConnection:
    """This worker process's own psycopg connection, as the runtime role under RLS, opened on
    first use (in the prefork child, never shared across a fork) and kept across tasks.
    Autocommit, so `connection.transaction()` sends BEGIN and COMMIT as the baseline does;
    psycopg's defaults: server-side binding, statements prepared after five runs."""

    def __init__(self):
        self.pid = None
        self.connection: psycopg.Connection | None = None
        self.cursor: psycopg.Cursor | None = None
        self.record = None

    def get(self) -> psycopg.Cursor:
        conn = self.connection
        if conn is None or conn.closed or conn.broken or self.pid != os.getpid():
            db = settings.DATABASES["default"]
            params = {"dbname": db["NAME"], "user": db["USER"], "password": db["PASSWORD"],
                      "host": db["HOST"], "port": db["PORT"]}  # fmt: skip
            self.connection = psycopg.connect(**{k: v for k, v in params.items() if v}, autocommit=True)
            self.cursor = psycopg.Cursor(self.connection)
            self.pid = os.getpid()
            self.record = self.record or raw_recorder()
        return self.cursor


_raw = _RawConnection()


@app.task(name=RAW_TASK_NAME, base=LLMTask)
def raw_route(payload: dict) -> dict:
    """`llm.route`'s work at its floor: the payload read as a dict (no validation), the priced
    call row and the µUSD monthly upsert in one transaction inside the tenant (the service's
    statements and parameters), and a receipt with `llm.route`'s keys. Same Celery task class
    (options, result repr size) as `llm.route`.

    The usage is what the stub derives from the benchmark's prompts (`bench.workloads.
    call_usage`, computed once per model and output tokens), and there is no cost cap check
    (the service's needs the price catalogue; the benchmark's dearest call is ~15 cents,
    far under its cap): the floor pays for neither."""
    cursor = _raw.get()
    prompt = payload["prompt"]
    usage = call_usage(
        prompt.get("model") or RAW_DEFAULT_MODEL, prompt.get("output_tokens", RAW_DEFAULT_OUTPUT_TOKENS)
    )
    tenant, request_id = payload["tenant_id"], payload["request_id"]
    row = _raw.record(
        cursor,
        tenant=tenant,
        usage=usage,
        request_id=request_id,
        correlation_id=payload.get("correlation_id"),
    )
    recorded = row is not None
    if not recorded:  # a redelivery: the row is there already (never in the benchmark)
        with cursor.connection.transaction():
            cursor.execute("SELECT set_config('app.current_tenant_id', %s, true)", [tenant])
            row = cursor.execute(
                "SELECT id, created_at, cost_micros, price_id FROM llm_api_calls"
                " WHERE tenant_id = %s AND request_id = %s AND endpoint = %s",
                [tenant, request_id, ENDPOINT],
            ).fetchone()
        if row is None:  # nothing conflicted: the model had no price in force
            raise ValueError(f"model {usage.model!r} has no price in force; nothing was recorded")
    return {
        "tenant_id": tenant,
        "endpoint": ENDPOINT,
        "request_id": request_id,
        "correlation_id": payload.get("correlation_id"),
        "api_call_id": str(row[0]),
        "recorded": recorded,
    }
