"""The Celery app the benchmark's workers run: the project's app and tasks, with the project's
worker configuration (skeldir/celery.py: connections reused across tasks), plus `bench.noop`,
registered here only, so production workers never carry it.

    celery -A bench.celery_app worker -Q llm
"""

from skeldir.celery import app

__all__ = ["app"]

NOOP_TASK_NAME = "bench.noop"


@app.task(name=NOOP_TASK_NAME)
def noop(payload: dict) -> dict:
    """The same message and result round trip as an LLM task, and no work: what the broker,
    the worker and the result backend cost by themselves. Settings give it the LLM tasks'
    delivery options (acks_late, reject_on_worker_lost, prefetch 1) and the `llm` queue."""
    return {"ok": True}
