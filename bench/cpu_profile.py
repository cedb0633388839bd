"""`python -m bench.cpu_profile`: where one call's client CPU goes, by subtraction.

Variants of the same work run interleaved, call by call in shuffled order, in this one
thread; each call's thread CPU time is taken and a variant's figure is the trimmed mean
(10 % off each end). What one variant leaves out is what the difference to another costs.

- Service path: the raw SQL baseline (bench.workloads), the same statements through Django
  (whether the tenant has a budget, then transaction.atomic() and a Django cursor per
  statement, as the service issues them), and
  the service path itself (route_request with its payload).
- Worker child: `celery.app.trace.fast_trace_task` called exactly as a prefork child calls it
  for a message (JSON body decode, tracer, the project's task signals, the task, its result
  stored in Redis; only the pool's pipe is missing) for bench.noop, bench.raw_route and
  llm.route, and for variants without the project's task signals, without the result
  stored, and without Django's per-task health check.

Uses the benchmark's database (emptied first, as `python -m bench` does) and Redis db 12.
Figures move with the machine's load: compare rows of one run. See bench/PROFILE-NOTES.md.
"""

import argparse
import contextlib
import json
import logging
import os
import random
import statistics
import sys
import time
import uuid
import weakref
from collections.abc import Callable

from bench.__main__ import REDIS_URL

HOST = "cpu-profile@localhost"
PROJECT_MODULES = ("skeldir.", "llm.")  # whose task-signal receivers the no-signals variant drops
RAW_LABEL = "raw SQL through psycopg (the baseline)"


def trimmed_mean(values: list[float], cut: float = 0.1) -> float:
    ordered = sorted(values)
    k = int(len(ordered) * cut)
    return statistics.mean(ordered[k : len(ordered) - k])


def interleaved(ops: dict[str, Callable[[int], object]], *, calls: int, warmup: int = 50) -> dict[str, float]:
    """Thread CPU microseconds per call of each op, the ops taking turns in shuffled order."""
    for op in ops.values():
        for i in range(warmup):
            op(i)
    samples: dict[str, list[float]] = {name: [] for name in ops}
    order, rng, clock = list(ops), random.Random(0), time.thread_time_ns
    for i in range(warmup, warmup + calls):
        rng.shuffle(order)
        for name in order:
            op = ops[name]
            started = clock()
            op(i)
            samples[name].append((clock() - started) / 1000)
    return {name: trimmed_mean(values) for name, values in samples.items()}


def table(title: str, figures: dict[str, float], base: str) -> str:
    lines = [f"## {title}", "", f"| variant | CPU us per call | difference to {base} |", "|---|---:|---:|"]
    for name, us in figures.items():
        lines.append(f"| {name} | {us:,.0f} | {us - figures[base]:+,.0f} |")
    return "\n".join(lines)


def service_ops(hot: list[str], run: str) -> dict[str, Callable[[int], object]]:
    from django.db import connection, transaction
    from psycopg.types.json import Jsonb

    from bench import workloads
    from llm.money import micros_to_cents
    from llm.services import utc_month
    from llm.sql import ADD_TO_MONTHLY_COSTS_SQL, INSERT_API_CALL_SQL, TENANT_HAS_BUDGET_SQL

    tenant = hot[0]

    def through_django(i: int) -> None:
        usage = workloads.call_usage(*workloads.planned_call(0, i))
        request_id = f"{run}dj:0:{i}"
        with connection.cursor() as cursor:
            cursor.execute(TENANT_HAS_BUDGET_SQL, [tenant])
            cursor.fetchone()
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(workloads.SET_TENANT_SQL, [tenant])
            with connection.cursor() as cursor:
                cursor.execute(
                    INSERT_API_CALL_SQL, workloads.call_row_params(tenant, usage, request_id, request_id)
                )
                row = cursor.fetchone()
            with connection.cursor() as cursor:
                micros = row[2]
                cents = micros_to_cents(micros)
                breakdown = Jsonb({usage.model: {"calls": 1, "cost_micros": micros, "cost_cents": cents}})
                cursor.execute(
                    ADD_TO_MONTHLY_COSTS_SQL, [tenant, utc_month(row[1]), micros, cents, 1, breakdown]
                )

    raw, _ = workloads.baseline(tenants=hot, tag=f"{run}raw")(0)
    service, _ = workloads.service(tenants=hot, tag=f"{run}svc")(0)
    return {
        RAW_LABEL: raw,
        "the same SQL through Django: atomic(), a cursor per statement": through_django,
        "service path: route_request(LLMTaskPayload(...))": service,
    }


class _ProjectSignalsOff:
    """The project's receivers of the task signals disconnected for the call."""

    def __init__(self):
        from celery import signals

        self.signals = [signals.task_prerun, signals.task_postrun, signals.task_success, signals.task_failure]
        self.saved = [list(s.receivers) for s in self.signals]

    @staticmethod
    def _ours(entry) -> bool:
        receiver = entry[1]
        if isinstance(receiver, weakref.ReferenceType):
            receiver = receiver()
        return getattr(receiver, "__module__", "").startswith(PROJECT_MODULES)

    def __enter__(self):
        for signal in self.signals:
            signal.receivers[:] = [entry for entry in signal.receivers if not self._ours(entry)]
            signal.sender_receivers_cache.clear()

    def __exit__(self, *exc):
        for signal, saved in zip(self.signals, self.saved, strict=True):
            signal.receivers[:] = saved
            signal.sender_receivers_cache.clear()


class _NoHealthCheck:
    def __enter__(self):
        from django.db import connection

        self.connection, self.enabled = connection, connection.health_check_enabled
        connection.health_check_enabled = False

    def __exit__(self, *exc):
        self.connection.health_check_enabled = self.enabled


def worker_ops(hot: list[str], run: str, task_ids: list[str]) -> dict[str, Callable[[int], object]]:
    """The worker variants; every task id used goes into `task_ids` (their results to delete)."""
    from celery.app.trace import build_tracer, fast_trace_task, setup_worker_optimizations

    from bench import workloads
    from bench.celery_app import NOOP_TASK_NAME, RAW_TASK_NAME, app

    setup_worker_optimizations(app, HOST)
    for task in app.tasks.values():  # what the worker does at start
        task.__trace__ = build_tracer(task.name, task, app.loader, HOST, app=app)
    # The worker's log lines are formatted as usual, and thrown away.
    devnull = open(os.devnull, "w")  # noqa: SIM115 (lives as long as the process)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(devnull)
    signals_off = _ProjectSignalsOff()

    def op(name: str, tag: str, *, ignore_result: bool = False, around=None) -> Callable[[int], object]:
        def run_task(i: int) -> None:
            task_id = str(uuid.uuid4())
            task_ids.append(task_id)
            payload = workloads.batch_payloads(tenants=hot, tag=f"{run}{tag}", client=0, i=i, size=1)[0]
            message = app.amqp.as_task_v2(task_id, name, [payload], {})
            request = {
                **message.headers,
                "delivery_info": {"exchange": "", "routing_key": "llm", "priority": 0, "redelivered": False},
                "reply_to": message.properties.get("reply_to"),
                "correlation_id": task_id,
                "hostname": HOST,
                "ignore_result": ignore_result,
            }
            body = json.dumps(message.body).encode()
            with around or contextlib.nullcontext():
                failed, result, _ = fast_trace_task(name, task_id, request, body, "application/json", "utf-8")
            if failed:
                raise RuntimeError(f"{name} failed: {result}")

        return run_task

    noop = NOOP_TASK_NAME
    return {
        noop: op(noop, "noop"),
        f"{noop} without the project's task signals": op(noop, "nosig", around=signals_off),
        f"{noop} without storing its result": op(noop, "nores", ignore_result=True),
        RAW_TASK_NAME: op(RAW_TASK_NAME, "raw"),
        "llm.route": op("llm.route", "route"),
        "llm.route without the per-task health check": op("llm.route", "nohc", around=_NoHealthCheck()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu_profile", description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=600, help="Calls per variant (default 600).")
    parser.add_argument("--database", default="skeldir_bench")
    parser.add_argument("--superuser-url", default=os.environ.get("BENCH_SUPERUSER_URL"))
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", REDIS_URL))
    args = parser.parse_args()

    import redis

    from bench.celery_e2e import RESULT_KEY, redis_available
    from bench.database import create_tenants, migrate_and_reset, prepare_database

    database = prepare_database(name=args.database, superuser_url=args.superuser_url)
    os.environ["CELERY_BROKER_URL"] = os.environ["CELERY_RESULT_BACKEND"] = args.redis_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "skeldir.settings")
    import django

    django.setup()
    migrate_and_reset(database)
    hot = create_tenants(database, count=1, prefix="bench hot tenant")
    run = f"cpu{uuid.uuid4().hex[:6]}"
    print("# CPU per call, by subtraction (one thread, variants interleaved)\n")
    figures = interleaved(service_ops(hot, run), calls=args.calls)
    print(table("Service path, per call (hot tenant)", figures, base=RAW_LABEL))
    if not redis_available(args.redis_url):
        print(f"\nWorker child: not measured, no Redis at {args.redis_url}")
        return 0
    task_ids: list[str] = []
    figures = interleaved(worker_ops(hot, run, task_ids), calls=args.calls)
    results = redis.Redis.from_url(args.redis_url)
    for start in range(0, len(task_ids), 1000):  # what the run stored, as the bench does
        results.delete(*(RESULT_KEY.format(task_id) for task_id in task_ids[start : start + 1000]))
    print()
    print(table("Worker child, per task (fast_trace_task in-process)", figures, base="bench.noop"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
