"""Task payload contracts (pydantic): what every LLM task takes, the prompts the job kinds
need, what the services return and what the tasks return, and the tasks' stable names.
Payloads travel as JSON (`model_dump(mode="json")`); `task_arguments` builds a task's message
arguments from one, and `task_receipt` a task's return value from a service's result."""

import math
import uuid
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from typing_extensions import TypeAliasType

Endpoint = Literal["route", "explanation", "investigation", "budget_optimization"]
ENDPOINTS: tuple[Endpoint, ...] = ("route", "explanation", "investigation", "budget_optimization")
# Stable names: messages already queued keep finding their task across releases.
TASK_NAMES: dict[Endpoint, str] = {
    "route": "llm.route",
    "explanation": "llm.explanation",
    "investigation": "llm.investigation",
    "budget_optimization": "llm.budget_optimization",
}

# A fixed namespace, so a derived request_id is the same on every machine and every retry.
REQUEST_ID_NAMESPACE = uuid.UUID("5b1f2f4e-7d1c-4f37-9a57-0f6a9e3c2d10")

BIGINT_MAX = 2**63 - 1
# Bounds that keep every amount far inside a bigint column and exact as a float.
MAX_COST_CENTS = 10**11  # $1,000,000,000: a per-call cap above it means "no cap"
MAX_BUDGET_CENTS = 10**12
MAX_CHANNEL_SCORE = 10**9
MAX_PROMPT_DEPTH = 16


def _storable_text(value: str) -> str:
    # PostgreSQL text (and jsonb) cannot hold U+0000, nor a lone surrogate (JSON's "\ud800"
    # escapes one; no UTF-8 spells it): refused here, never by the database later.
    if "\x00" in value:
        raise ValueError("must not contain a NUL character (\\u0000)")
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise ValueError("must not contain a lone surrogate (\\ud800-\\udfff)") from None
    return value


def _json_safe(value: Any, depth: int = 0) -> Any:
    """A prompt is JSON any part of the system can store and send: strings and keys without
    NUL or lone surrogates, finite numbers, whole numbers (however written) that fit a bigint,
    nesting at most MAX_PROMPT_DEPTH."""
    if depth > MAX_PROMPT_DEPTH:
        raise ValueError(f"nested deeper than {MAX_PROMPT_DEPTH} levels")
    if isinstance(value, str):
        _storable_text(value)
    elif isinstance(value, bool) or value is None:
        pass
    elif isinstance(value, int):
        if not -BIGINT_MAX <= value <= BIGINT_MAX:
            raise ValueError("integers must fit in 64 bits")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("numbers must be finite")
        # JSON has one number type: 1e20 is the integer 10**20, however it is written.
        if value.is_integer() and not -BIGINT_MAX <= value <= BIGINT_MAX:
            raise ValueError("integers must fit in 64 bits")
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError("object keys must be strings")
            _storable_text(key)
            _json_safe(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _json_safe(item, depth + 1)
    else:
        raise ValueError(f"{type(value).__name__} is not a JSON value")
    return value


# The contracts' JSON Schema (the API's OpenAPI document) says what the validators decide, so
# that a client, or a fuzzer, can tell valid input from invalid input without asking.
NO_NUL_PATTERN = r"^[^\x00]*$"


def _keys_named_by_pattern(schema: dict) -> None:
    """pydantic documents keys with a pattern as `patternProperties`, which leaves every other
    key unconstrained; the validators refuse those keys, so say `propertyNames` instead."""
    if patterns := schema.pop("patternProperties", None):
        ((pattern, values),) = patterns.items()
        schema["propertyNames"] = {"pattern": pattern, **schema.get("propertyNames", {})}
        schema["additionalProperties"] = values


class DocumentedAs:
    """Annotation: document a type with another type's JSON Schema (same meaning, a schema
    JSON Schema can say), while validation stays the annotated type's."""

    def __init__(self, documented: object):
        self.core_schema = TypeAdapter(documented).core_schema

    def __get_pydantic_json_schema__(self, core_schema, handler):
        return handler(self.core_schema)


NonNegativeInt = Annotated[StrictInt, Field(ge=0)]


def text(**constraints: int) -> type[str]:
    """A strict string with these length constraints and no NUL (nor lone surrogate)."""
    return Annotated[
        StrictStr,
        Field(**constraints, json_schema_extra={"pattern": NO_NUL_PATTERN}),
        AfterValidator(_storable_text),
    ]


# What `_json_safe` accepts, as JSON Schema (documentation only): NUL-free strings and keys,
# numbers within 64 bits (every float past them is a whole number), and nesting (at most
# MAX_PROMPT_DEPTH levels, which JSON Schema cannot say).
PromptValue = TypeAliasType(
    "PromptValue",
    text()
    | Annotated[float, WithJsonSchema({"type": "number", "minimum": -BIGINT_MAX, "maximum": BIGINT_MAX})]
    | bool
    | list["PromptValue"]
    | Annotated[dict[text(), "PromptValue"], Field(json_schema_extra=_keys_named_by_pattern)]
    | None,
)
Identifier = text(min_length=1, max_length=200)
Prompt = Annotated[
    dict[str, Any],
    AfterValidator(_json_safe),
    DocumentedAs(Annotated[dict[text(), PromptValue], Field(json_schema_extra=_keys_named_by_pattern)]),
]
CostCapCents = Annotated[StrictInt, Field(ge=0, le=MAX_COST_CENTS)]
Question = text(min_length=1, max_length=2_000)
BudgetCents = Annotated[StrictInt, Field(gt=0, le=MAX_BUDGET_CENTS)]
# Channel name -> a non-negative, finite performance score (e.g. ROAS); budget follows it.
ChannelScore = Annotated[
    StrictInt | StrictFloat,
    Field(ge=0, le=MAX_CHANNEL_SCORE, allow_inf_nan=False),
    # pydantic would document the bounds of a union as the non-keywords "ge" and "le".
    WithJsonSchema({"type": "number", "minimum": 0, "maximum": MAX_CHANNEL_SCORE}),
]
Channels = Annotated[
    dict[text(min_length=1, max_length=100), ChannelScore],
    Field(min_length=1, max_length=50, json_schema_extra=_keys_named_by_pattern),
]


class InvalidPayload(ValueError):
    """A task payload that can never succeed: not retried, nothing written."""

    def __init__(self, message: str, *, fields: dict[str, str] | None = None):
        super().__init__(message)
        self.fields = fields or {}  # field path -> what is wrong with it

    @classmethod
    def from_validation_error(cls, error: ValidationError, *, what: str = "LLM task payload"):
        prefix = "prompt." if what == "prompt" else ""
        fields = {
            prefix + (".".join(str(p) for p in e["loc"]) or "(payload)"): e["msg"] for e in error.errors()
        }
        problems = "; ".join(f"{field}: {message}" for field, message in fields.items())
        return cls(f"Invalid {what}: {problems}", fields=fields)


class LLMTaskPayload(BaseModel):
    """What every LLM task takes. Strict: wrong types are errors, never coerced."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    tenant_id: Annotated[uuid.UUID, Field(strict=False)]  # a UUID or its string form (JSON)
    request_id: Identifier | None = None
    correlation_id: Identifier  # generated when absent or null
    prompt: Prompt
    max_cost_cents: CostCapCents

    @model_validator(mode="before")
    @classmethod
    def _generate_missing_correlation_id(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("correlation_id") is None:
            return {**data, "correlation_id": str(uuid.uuid4())}
        return data

    @classmethod
    def parse(cls, data: object, *, fallback_correlation_id: str | None = None) -> "LLMTaskPayload":
        """Validate raw task input, raising InvalidPayload with every problem named.

        A task passes its own id as `fallback_correlation_id`: a redelivered message keeps its
        task id, so a payload sent without ids still derives the same request_id every time.
        """
        if isinstance(data, dict) and data.get("correlation_id") is None and fallback_correlation_id:
            data = {**data, "correlation_id": fallback_correlation_id}
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            raise InvalidPayload.from_validation_error(error) from None

    def request_id_for(self, endpoint: Endpoint) -> str:
        """The given request_id, or one derived from tenant, endpoint and correlation id."""
        if self.request_id is not None:
            return self.request_id
        return str(uuid.uuid5(REQUEST_ID_NAMESPACE, f"{self.tenant_id}:{endpoint}:{self.correlation_id}"))

    def for_endpoint(self, endpoint: Endpoint) -> "LLMTaskPayload":
        """This payload with its request_id made explicit, as it should be enqueued."""
        return self.model_copy(update={"request_id": self.request_id_for(endpoint)})


def task_arguments(
    endpoint: Endpoint,
    payload: "LLMTaskPayload",
    *,
    force_failure: bool = False,
    job_id: uuid.UUID | None = None,
) -> dict:
    """JSON-only `apply_async` arguments for an LLM task, with the request_id made explicit."""
    kwargs: dict = {"force_failure": True} if force_failure else {}
    if job_id is not None:
        kwargs["job_id"] = str(job_id)
    return {"args": [payload.for_endpoint(endpoint).model_dump(mode="json")], "kwargs": kwargs}


class StubPromptOptions(BaseModel):
    """Prompt keys the stub workers honour; every other key is free-form prompt content."""

    model_config = ConfigDict(extra="ignore", strict=True)

    model: text(min_length=1, max_length=200) | None = None  # None: the endpoint's default
    # An internal knob, refused by the API: wait this long before recording, as a provider
    # call would (load and failure tests, the benchmark).
    sleep_ms: Annotated[StrictInt, Field(ge=0, le=60_000)] = 0
    # An internal knob, refused by the API: the output tokens the provider reports (tests and
    # the benchmark choose a call's usage, and so its cost, with it).
    output_tokens: Annotated[StrictInt, Field(ge=0, le=2**31 - 1)] | None = None


class InvestigationPrompt(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    question: Question


class BudgetOptimizationPrompt(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    total_budget_cents: BudgetCents
    channels: Channels


class LLMCallResult(BaseModel):
    """The receipt of one recorded LLM call. `recorded` is False when the call had already
    been recorded (a retry or a redelivery): nothing was written the second time."""

    tenant_id: uuid.UUID
    endpoint: Endpoint
    request_id: str
    correlation_id: str | None
    api_call_id: uuid.UUID
    recorded: StrictBool
    model: str
    price_id: uuid.UUID | None
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    cost_micros: int
    cost_cents: int  # derived from cost_micros, half up
    latency_ms: int


class RouteResult(LLMCallResult):
    route: Endpoint


class ExplanationResult(LLMCallResult):
    explanation: str


class InvestigationResult(LLMCallResult):
    investigation_id: uuid.UUID
    status: str
    result: dict[str, Any] | None


class BudgetOptimizationResult(LLMCallResult):
    job_id: uuid.UUID
    status: str
    recommendations: dict[str, Any] | None


# --- what the tasks return --------------------------------------------------------------------


class LLMCallReceipt(BaseModel):
    """What an LLM task returns, and so all a result backend stores of it (django-celery-results'
    table, which row-level security does not seal, or Redis): ids and status, nothing else.
    Never the prompt-derived output (route, explanation, investigation result, budget
    recommendations) nor the cost: those stay in the tenant's rows, read inside the tenant."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant_id: uuid.UUID
    endpoint: Endpoint
    request_id: str
    correlation_id: str | None
    api_call_id: uuid.UUID
    recorded: StrictBool


class LLMJobReceipt(LLMCallReceipt):
    """The receipt of an investigation or budget optimization: the call's, with its job."""

    job_id: uuid.UUID
    status: str


def task_receipt(result: LLMCallResult) -> dict:
    """A service's full result trimmed to the task's JSON return value (see LLMCallReceipt)."""
    call = result.model_dump(include=set(LLMCallReceipt.model_fields))
    if isinstance(result, InvestigationResult):
        receipt = LLMJobReceipt(**call, job_id=result.investigation_id, status=result.status)
    elif isinstance(result, BudgetOptimizationResult):
        receipt = LLMJobReceipt(**call, job_id=result.job_id, status=result.status)
    else:
        receipt = LLMCallReceipt(**call)
    return receipt.model_dump(mode="json")
