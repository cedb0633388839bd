"""Sending LLM tasks: always once the current transaction commits, so a worker always finds
what the request wrote, and a request that rolls back sends nothing.

Tasks are looked up by their stable name in the Celery app's registry rather than imported:
services never import the task modules that call them.
"""

import uuid

from celery import current_app
from django.db import transaction

from llm.payloads import TASK_NAMES, Endpoint, LLMTaskPayload, task_arguments


def enqueue_on_commit(
    endpoint: Endpoint, payload: LLMTaskPayload, *, job_id: uuid.UUID | None = None
) -> None:
    """Send the endpoint's task when the transaction commits. A broker failure then is
    logged, not raised (`robust`): a job stays `pending` and the stale-job sweeper fails it."""
    task = current_app.tasks[TASK_NAMES[endpoint]]
    arguments = task_arguments(endpoint, payload, job_id=job_id)
    transaction.on_commit(lambda: task.apply_async(**arguments), robust=True)


def enqueue_task_on_commit(task_name: str, **kwargs: str) -> None:
    """Send the named task (JSON keyword arguments) when the transaction commits."""
    task = current_app.tasks[task_name]
    transaction.on_commit(lambda: task.apply_async(kwargs=kwargs), robust=True)
