"""The Celery app the benchmark's workers run: the project's app and tasks, plus `bench.noop`,
registered here only, so production workers never carry it.

    celery -A bench.celery_app worker -Q llm

With BENCH_WORKER_CONFIG=recommended the worker also runs what BENCHMARKS.md recommends for
the project's settings, so the benchmark can measure it against the configuration as it is.
"""

import os

from celery import signals
from django.conf import settings
from django.db import close_old_connections

from skeldir.celery import app

__all__ = ["app"]

NOOP_TASK_NAME = "bench.noop"
WORKER_CONFIG = "BENCH_WORKER_CONFIG"


@app.task(name=NOOP_TASK_NAME)
def noop(payload: dict) -> dict:
    """The same message and result round trip as an LLM task, and no work: what the broker,
    the worker and the result backend cost by themselves. Settings give it the LLM tasks'
    delivery options (acks_late, reject_on_worker_lost, prefetch 1) and the `llm` queue."""
    return {"ok": True}


if os.environ.get(WORKER_CONFIG) == "recommended":
    # 1. Celery's Django fixup closes every database connection before and after every task
    #    unless CELERY_DB_REUSE_MAX is set: each task opens a new PostgreSQL session. Treat a
    #    task as Django treats a request instead: keep the connection for CONN_MAX_AGE, drop
    #    it when an error left it broken (CONN_HEALTH_CHECKS checks it before reuse).
    app.conf.CELERY_DB_REUSE_MAX = 2**62

    @signals.task_prerun.connect
    @signals.task_postrun.connect
    def _close_old_connections(**kwargs) -> None:
        close_old_connections()

    # 2. Bind parameters on the server and let psycopg prepare the statements that repeat,
    #    so PostgreSQL stops parsing and planning the same few statements for every call.
    settings.DATABASES["default"].setdefault("OPTIONS", {}).update(
        server_side_binding=True, prepare_threshold=5
    )
