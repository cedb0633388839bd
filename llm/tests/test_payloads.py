"""The task payload contract: strict, closed, and deterministic about request ids."""

import uuid

import pytest

from llm.payloads import InvalidPayload, LLMTaskPayload

TENANT = uuid.UUID("11111111-2222-3333-4444-555555555555")


def valid(**overrides) -> dict:
    return {"tenant_id": str(TENANT), "prompt": {"q": "x"}, "max_cost_cents": 10, **overrides}


def without(key: str) -> dict:
    data = valid()
    del data[key]
    return data


@pytest.mark.parametrize(
    ("data", "field", "problem"),
    [
        (without("tenant_id"), "tenant_id", "Field required"),
        (valid(tenant_id="not-a-uuid"), "tenant_id", "valid UUID"),
        (valid(tenant_id="x' OR 1=1 --"), "tenant_id", "valid UUID"),
        (valid(tenant_id=12345), "tenant_id", "UUID"),
        (valid(max_cost_cents=-1), "max_cost_cents", "greater than or equal to 0"),
        (valid(max_cost_cents="10"), "max_cost_cents", "valid integer"),
        (valid(max_cost_cents=10.0), "max_cost_cents", "valid integer"),
        (valid(max_cost_cents=True), "max_cost_cents", "valid integer"),
        (without("max_cost_cents"), "max_cost_cents", "Field required"),
        (valid(prompt="summarise this"), "prompt", "valid dictionary"),
        (valid(prompt=["a", "b"]), "prompt", "valid dictionary"),
        (valid(request_id=42), "request_id", "valid string"),
        (valid(request_id=""), "request_id", "at least 1 character"),
        (valid(tenant="acme"), "tenant", "Extra inputs are not permitted"),
    ],
)
def test_invalid_payloads_name_the_field_and_the_problem(data, field, problem):
    with pytest.raises(InvalidPayload) as error:
        LLMTaskPayload.parse(data)
    assert f"{field}: " in str(error.value)
    assert problem in str(error.value)


def test_a_payload_that_is_not_an_object_is_rejected():
    with pytest.raises(InvalidPayload, match="valid dictionary"):
        LLMTaskPayload.parse(["not", "a", "payload"])


def test_the_derived_request_id_is_deterministic_per_tenant_endpoint_and_correlation():
    payload = LLMTaskPayload.parse(valid(correlation_id="corr-1"))
    again = LLMTaskPayload.parse(valid(correlation_id="corr-1"))
    assert payload.request_id_for("route") == again.request_id_for("route")
    assert payload.request_id_for("route") != payload.request_id_for("explanation")
    assert payload.request_id_for("route") != LLMTaskPayload.parse(
        valid(correlation_id="corr-2")
    ).request_id_for("route")
    other_tenant = LLMTaskPayload.parse(valid(correlation_id="corr-1", tenant_id=str(uuid.uuid4())))
    assert payload.request_id_for("route") != other_tenant.request_id_for("route")


def test_a_given_request_id_wins_and_survives_the_json_round_trip():
    payload = LLMTaskPayload.parse(valid(request_id="client-42"))
    assert payload.request_id_for("investigation") == "client-42"
    assert LLMTaskPayload.parse(payload.model_dump(mode="json")) == payload


def test_a_missing_correlation_id_is_generated_or_taken_from_the_task_id():
    generated = LLMTaskPayload.parse(valid())
    assert generated.correlation_id
    assert generated.correlation_id != LLMTaskPayload.parse(valid()).correlation_id
    from_task = LLMTaskPayload.parse(valid(), fallback_correlation_id="task-id-1")
    assert from_task.correlation_id == "task-id-1"
    assert from_task.request_id_for("route") == LLMTaskPayload.parse(
        valid(), fallback_correlation_id="task-id-1"
    ).request_id_for("route")


def test_for_endpoint_makes_the_request_id_explicit():
    payload = LLMTaskPayload.parse(valid())
    explicit = payload.for_endpoint("explanation")
    assert explicit.request_id == payload.request_id_for("explanation")
    assert explicit.model_dump(mode="json")["tenant_id"] == str(TENANT)
