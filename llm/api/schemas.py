"""The API's request and response contracts (django-ninja schemas, i.e. pydantic models):
what a tenant may send and what it gets back, and so the OpenAPI document."""

import datetime
import re
import uuid
from typing import Annotated, Any, Literal

from ninja import Field, Header, Schema
from pydantic import BeforeValidator, ConfigDict, field_validator

from llm.payloads import BudgetCents, Channels, CostCapCents, Prompt, Question

IdempotencyKey = Annotated[
    str | None,
    Header(
        None,
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        pattern=r"^[\x21-\x7e]+$",
        description="Becomes the request_id: a retry with the same key records nothing twice.",
    ),
]
RFC3339_DATE_TIME = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})", re.ASCII
)


def _rfc3339(value: object) -> object:
    # pydantic alone would also take a bare number (a Unix time), a date, or a time without
    # an offset; the document promises an RFC 3339 date-time ("format": "date-time").
    if isinstance(value, str) and not RFC3339_DATE_TIME.fullmatch(value):
        raise ValueError("must be an RFC 3339 date-time with an offset, e.g. 2026-11-01T00:00:00Z")
    return value


DateTime = Annotated[datetime.datetime, BeforeValidator(_rfc3339)]
MaxCostCents = Annotated[CostCapCents, Field(description="Cost cap for the call, in cents.")]
# Prompt keys that set cost, price or provider time: internal knobs for tests and the
# benchmark (tasks run in-process), never taken from a tenant.
INTERNAL_PROMPT_KEYS = ("simulated_cost_cents", "sleep_ms", "output_tokens")
MICROS = "micro-USD (10^-6 USD), exact"
CENTS = "cents, derived from the µUSD figure (half up)"


def _prompt_schema(schema: dict) -> None:
    """What the API takes in a prompt beyond free-form content, as JSON Schema: a model name
    (or none: the endpoint's default), and none of the internal knobs. Which models exist is
    the price catalogue's, which changes without a new document: a model with no price in
    force is a 400 naming `prompt.model`."""
    schema["properties"] = {
        "model": {
            "anyOf": [{"type": "string", "minLength": 1, "pattern": r"^\S+$"}, {"type": "null"}],
            "description": "A model with a price in force, e.g. stub-small; default: the endpoint's.",
        }
    }
    schema["propertyNames"] = {**schema.get("propertyNames", {}), "not": {"enum": list(INTERNAL_PROMPT_KEYS)}}


class RequestBody(Schema):
    model_config = ConfigDict(extra="forbid", strict=True)


class InvestigationRequest(RequestBody):
    question: Question
    max_cost_cents: MaxCostCents | None = None


class BudgetOptimizationRequest(RequestBody):
    total_budget_cents: BudgetCents
    channels: Annotated[Channels, Field(description="Channel name -> performance score; budget follows it.")]
    max_cost_cents: MaxCostCents | None = None


class LLMCallRequest(RequestBody):
    prompt: Annotated[Prompt, Field(json_schema_extra=_prompt_schema)]
    max_cost_cents: MaxCostCents | None = None

    @field_validator("prompt")
    @classmethod
    def _no_internal_knobs(cls, prompt: dict) -> dict:
        if refused := [key for key in INTERNAL_PROMPT_KEYS if key in prompt]:
            raise ValueError(f"{', '.join(refused)} cannot be set through the API")
        return prompt


class Accepted(Schema):
    request_id: str
    status: str = "pending"


class JobAccepted(Accepted):
    job_id: uuid.UUID
    status_url: str


class JobOut(Schema):
    id: uuid.UUID
    request_id: str
    status: Literal["pending", "running", "completed", "failed"]
    created_at: datetime.datetime
    updated_at: datetime.datetime
    cost_micros: int = Field(description=MICROS)
    cost_cents: int = Field(description=CENTS)


class InvestigationOut(JobOut):
    query: str
    result: dict[str, Any] | None


class BudgetOptimizationOut(JobOut):
    recommendations: dict[str, Any] | None


class ModelCost(Schema):
    calls: int
    cost_micros: int = Field(description=MICROS)
    cost_cents: int = Field(description=CENTS)


class MonthCostsOut(Schema):
    tenant_id: uuid.UUID
    month: datetime.date
    total_cost_micros: int = Field(description=MICROS)
    total_cost_cents: int = Field(description=CENTS)
    total_calls: int
    model_breakdown: dict[str, ModelCost]


class CallOut(Schema):
    id: uuid.UUID
    created_at: datetime.datetime
    endpoint: str
    model: str
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    cost_micros: int = Field(description=MICROS)
    cost_cents: int = Field(description=CENTS)
    latency_ms: int
    was_cached: bool
    request_id: str
    correlation_id: str | None


class CallPage(Schema):
    items: list[CallOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next (older) page.")


class Error(Schema):
    error: str
    fields: dict[str, str] | None = Field(None, description="Field path -> what is wrong with it.")


class BudgetExceededError(Schema):
    """429: the tenant's budget cannot cover the call until `resets_at`."""

    error: str
    budget: Literal["monthly", "hourly"]
    remaining_micros: int = Field(description="What is left of that budget, in millionths of a dollar.")
    resets_at: datetime.datetime


class BudgetPeriodOut(Schema):
    cap_micros: int = Field(description=MICROS)
    spent_micros: int = Field(description="Settled spend this period, " + MICROS)
    reserved_micros: int = Field(description="Held for calls in flight, " + MICROS)
    remaining_micros: int = Field(description="cap - spent - reserved (never below 0), " + MICROS)
    cap_usd: str
    spent_usd: str
    reserved_usd: str
    remaining_usd: str
    resets_at: datetime.datetime


class BudgetOut(Schema):
    tenant_id: uuid.UUID
    limited: bool = Field(description="False: no budget is set, calls are not capped.")
    monthly: BudgetPeriodOut | None = Field(None, description="The calendar UTC month.")
    hourly: BudgetPeriodOut | None = Field(None, description="The current hour, with an hourly cap.")
    thresholds: list[int] = Field(default_factory=list, description="Alert thresholds, percent of the cap.")
    thresholds_crossed: list[int] = Field(default_factory=list, description="Crossed this month.")
    on_exceed: Literal["block", "fallback"] | None = None
