"""Sending LLM tasks: always once the current transaction commits, so a worker always finds
what the request wrote, and a request that rolls back sends nothing.

Tasks are looked up by their stable name in the Celery app's registry rather than imported:
services never import the task modules that call them.
"""

import uuid

from celery import current_app
from django.db import transaction

from llm.payloads import TASK_NAMES, Endpoint, LLMTaskPayload, task_arguments
from skeldir.tenancy import tenant_context


def enqueue_on_commit(
    endpoint: Endpoint, payload: LLMTaskPayload, *, job_id: uuid.UUID | None = None
) -> None:
    """Send the endpoint's task when the transaction commits. A broker failure then is
    logged, not raised (`robust`): a job stays `pending` and the stale-job sweeper fails it."""
    task = current_app.tasks[TASK_NAMES[endpoint]]
    arguments = task_arguments(endpoint, payload, job_id=job_id)
    transaction.on_commit(lambda: task.apply_async(**arguments), robust=True)


def request_llm_call(
    *, tenant_id: uuid.UUID, endpoint: Endpoint, prompt: dict, request_id: str | None, max_cost_cents: int
) -> str:
    """Send a route or explanation task once the transaction commits; returns its request_id.
    A repeated request_id is sent again and recorded once."""
    payload = LLMTaskPayload(
        tenant_id=tenant_id,
        request_id=request_id or str(uuid.uuid4()),
        prompt=prompt,
        max_cost_cents=max_cost_cents,
    )
    with tenant_context(tenant_id):
        enqueue_on_commit(endpoint, payload)
    return payload.request_id
