"""Schemathesis fuzzes the tenant API against its own OpenAPI document, in-process through the
WSGI application, as a tenant with a valid key, on the test database as the runtime role.

Every answer must be documented: no 5xx, only documented status codes, bodies and content
types that match their schemas. Requests the document calls valid must be accepted (but for
the few refusals JSON Schema cannot express, below), requests it calls invalid refused.
Tasks run eagerly at commit, so every POST the API accepts also runs its worker: nothing the
API accepts may fail later in a worker.

In the suite the run is deterministic (the same cases every time: no flaky failures) and
bounded: the coverage phase's cases plus MAX_EXAMPLES random ones per operation. A longer,
random run outside the suite: `SCHEMATHESIS_MAX_EXAMPLES=1000 ./dev test
llm/tests/test_api_schema.py` (each operation stops at its first failure, shrunk).
"""

import os

import pytest
import schemathesis
from celery import signals
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode, checks
from schemathesis.generation.meta import TestPhase

from skeldir.wsgi import application

pytestmark = pytest.mark.django_db(transaction=True)

LONG_RUN = "SCHEMATHESIS_MAX_EXAMPLES" in os.environ
MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "25"))

schema = schemathesis.openapi.from_wsgi("/api/llm/openapi.json", application)
# Every generated request carries the tenant's valid key (the test sends it), not a generated
# Authorization header; the test sends the coverage phase's valid requests without a key and
# with an unknown one too, whose answers must be the documented 401.
schema.config.generation.update(with_security_parameters=False)


@pytest.fixture
def tenant_key(tenant_factory):
    tenant = tenant_factory.create(name="Fuzzed tenant")
    return tenant_factory.api_keys[tenant.id]


@pytest.fixture
def task_failures(run_tasks_eagerly):
    """Every task that failed during the test: eager tasks keep their exception in the result."""
    failures = []

    def record(sender=None, exception=None, args=None, **kwargs):
        failures.append(f"{sender.name}: {exception!r} for {args!r}")

    signals.task_failure.connect(record, weak=False)
    yield failures
    signals.task_failure.disconnect(record)


def _sent_value(body: object, field: str) -> object:
    for part in field.split("."):
        if not isinstance(body, dict) or part not in body:
            return None
        body = body[part]
    return body


def refused_for_what_json_schema_cannot_say(case, response) -> bool:
    """The refusals of schema-valid requests that JSON Schema cannot express, each a 400
    naming only the fields concerned:
    - a call whose cost (from the prompt's size and the model's price) is over its
      `max_cost_cents`;
    - a model the price catalogue has no price in force for (the catalogue changes without
      a new document);
    - a `cursor` this API never returned (it is opaque);
    - a whole number written as a float (`2.0`) for an integer: JSON Schema's "integer" takes
      it, the API's strict contracts take JSON integers only.
    """
    if response.status_code != 400:
        return False
    fields = (response.json() or {}).get("fields") or {}
    if not fields:
        return False
    for field, message in fields.items():
        if (field, message.split(" could cost ")[0]) == ("max_cost_cents", "the call"):
            continue
        if field == "prompt.model" and message.startswith(("Unknown model", "Model ")):
            continue
        if (field, message) == ("cursor", "not a cursor this API returned"):
            continue
        value = _sent_value(case.body, field)
        if isinstance(value, float) and value.is_integer() and message == "Input should be a valid integer":
            continue
        return False
    return True


def schema_valid_requests_are_accepted(ctx, response, case):
    """Schemathesis' positive_data_acceptance, less the refusals above."""
    if refused_for_what_json_schema_cannot_say(case, response):
        return None
    return checks.positive_data_acceptance(ctx, response, case)


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=not LONG_RUN,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_the_api_keeps_its_openapi_contract(case, tenant_key, task_failures):
    keys = [f"Bearer {tenant_key}"]
    if case.meta.phase.name == TestPhase.COVERAGE and case.meta.generation.mode == GenerationMode.POSITIVE:
        keys += [None, "Bearer sk_not-a-tenant-key"]
    for key in keys:
        case.call_and_validate(
            headers={"Authorization": key} if key else None,
            excluded_checks=[checks.positive_data_acceptance],
            additional_checks=[schema_valid_requests_are_accepted],
        )
    assert task_failures == [], "the API accepted what its worker refused"


def test_the_fuzzers_task_watch_sees_a_worker_refusal(task_failures, tenant_a):
    """The watch above is real: an eager task that refuses its payload is reported."""
    from llm.tasks import route

    route.apply_async(args=[{"tenant_id": str(tenant_a.id), "prompt": "not an object", "max_cost_cents": 1}])
    assert len(task_failures) == 1 and "InvalidPayload" in task_failures[0]
