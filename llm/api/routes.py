"""The tenant-facing JSON API under /api/llm/, built with django-ninja.

django-ninja because its request and response contracts are pydantic models, like the task
payloads, and it serves the OpenAPI document from them. Authentication is the tenant API key,
already checked by `llm.middleware.TenantMiddleware`, which runs the whole request inside the
tenant's context: every query here is sealed by row-level security.
"""

import datetime
import logging
import math
import uuid
from typing import Annotated

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import reverse
from ninja import NinjaAPI, Query, Status
from ninja.errors import AuthenticationError, HttpError
from ninja.errors import ValidationError as RequestValidationError
from ninja.security import HttpBearer

from llm import metrics, selectors, services
from llm.api.schemas import (
    Accepted,
    BudgetExceededError,
    BudgetOptimizationOut,
    BudgetOptimizationRequest,
    BudgetOut,
    BudgetPeriodOut,
    CallPage,
    DateTime,
    Error,
    IdempotencyKey,
    InvestigationOut,
    InvestigationRequest,
    JobAccepted,
    LLMCallRequest,
    MonthCostsOut,
    RequestBody,
)
from llm.models import BudgetOptimizationJob, Investigation
from llm.money import format_micros
from llm.payloads import InvalidPayload
from llm.services.budgets import ConcurrentAdmission

logger = logging.getLogger(__name__)


class TenantAPIKey(HttpBearer):
    """`Authorization: Bearer <tenant API key>`; TenantMiddleware has resolved it already."""

    def __call__(self, request: HttpRequest):
        return getattr(request, "tenant", None)

    def authenticate(self, request: HttpRequest, token: str):  # pragma: no cover - __call__ decides
        return getattr(request, "tenant", None)


api = NinjaAPI(
    title="Skeldir LLM API",
    version="1.0",
    description="Start LLM jobs and read their results and costs. Every route needs a tenant API key.",
    urls_namespace="llm-api",
    auth=TenantAPIKey(),
    openapi_url="/openapi.json",
    docs_url="/docs",
)


def _rejected(request: HttpRequest, exc: Exception, status: int, message: str, fields: dict | None = None):
    metrics.observe_validation_rejection(source="api", error=exc)
    return error_response(request, status, message, fields)


def error_response(
    request: HttpRequest, status: int, message: str, fields: dict | None = None
) -> HttpResponse:
    if transaction.get_connection().in_atomic_block:
        transaction.set_rollback(True)  # an error answer commits nothing
    body = {"error": message, **({"fields": fields} if fields else {})}
    return api.create_response(request, body, status=status)


@api.exception_handler(RequestValidationError)
def _invalid_request(request, exc: RequestValidationError):
    fields = {}
    for error in exc.errors:
        location = [
            str(part) for part in error.get("loc", ()) if part not in {"body", "payload", "query", "path"}
        ]
        fields[".".join(location) or "body"] = error.get("msg", "invalid")
    message = "Invalid request: " + "; ".join(f"{k}: {v}" for k, v in fields.items())
    return _rejected(request, exc, 400, message, fields)


@api.exception_handler(services.BudgetExceeded)
def _budget_exceeded(request, exc: services.BudgetExceeded):
    """429, and the request's transaction commits: it holds the BLOCK decision and nothing
    else (the reservation attempt was rolled back inside admission)."""
    metrics.observe_validation_rejection(source="api", error=exc)
    body = {
        "error": str(exc),
        "budget": exc.budget,
        "remaining_micros": exc.remaining_micros,
        "resets_at": exc.resets_at,
    }
    response = api.create_response(request, body, status=429)
    wait = (exc.resets_at - datetime.datetime.now(datetime.UTC)).total_seconds()
    response["Retry-After"] = str(max(1, math.ceil(wait)))
    return response


@api.exception_handler(ConcurrentAdmission)
def _concurrent_admission(request, exc):
    # The same Idempotency-Key in flight twice at once: one wins, this one may retry.
    return error_response(request, 409, "A request with this Idempotency-Key is being handled; retry it.")


@api.exception_handler(InvalidPayload)
def _invalid_payload(request, exc: InvalidPayload):
    return _rejected(request, exc, 400, str(exc), exc.fields)


@api.exception_handler(HttpError)
def _httperror_response(request, exc: HttpError):
    # django-ninja's own refusals, e.g. a body that is not JSON or nests too deep to parse.
    if exc.status_code == 400:
        return _rejected(request, exc, 400, f"Invalid request: {exc.message}", {"body": exc.message})
    return error_response(request, exc.status_code, exc.message)


@api.exception_handler(AuthenticationError)
def _unauthenticated(request, exc):
    response = error_response(
        request, 401, "Authentication required: send 'Authorization: Bearer <tenant API key>'."
    )
    response["WWW-Authenticate"] = 'Bearer realm="skeldir"'
    return response


@api.exception_handler(Http404)
def _not_found(request, exc):
    return error_response(request, 404, str(exc) or "Not found.")


@api.exception_handler(RequestDataTooBig)
def _too_large(request, exc):
    return _rejected(request, exc, 413, f"Request body over {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes.")


@api.exception_handler(Exception)
def _unexpected(request, exc):
    # The detail goes to the log only: database errors carry statements and parameters.
    logger.error("unexpected error answering %s %s", request.method, request.path, exc_info=exc)
    return error_response(request, 500, "Internal error; nothing was recorded. Retrying may help.")


# The error answers each route documents besides its own (see the handlers above).
UNAUTHENTICATED = {401: Error}  # every route: a missing, malformed or unknown key
NOT_FOUND = {404: Error}
BAD_REQUEST = {400: Error}
# Every POST: bad input, a body over DATA_UPLOAD_MAX_MEMORY_SIZE, and a tenant budget spent.
POST_ERRORS = {**BAD_REQUEST, **UNAUTHENTICATED, 409: Error, 413: Error, 429: BudgetExceededError}


def _max_cost(body: RequestBody) -> int:
    return body.max_cost_cents if body.max_cost_cents is not None else settings.LLM_DEFAULT_MAX_COST_CENTS


def _job_or_404(model, job_id: str):
    try:
        job = model.objects.filter(id=uuid.UUID(job_id)).first()
    except ValueError:
        job = None
    if job is None:  # another tenant's job is invisible here: the same answer as no job at all
        raise Http404(f"No {model._meta.verbose_name} {job_id}.")
    return job


def _job_accepted(response: HttpResponse, job, route: str) -> JobAccepted:
    url = reverse(f"llm-api:{route}", kwargs={"job_id": job.id})
    response["Location"] = url
    return JobAccepted(job_id=job.id, request_id=job.request_id, status=job.status, status_url=url)


@api.post("/investigations", response={202: JobAccepted, **POST_ERRORS}, tags=["jobs"])
def start_investigation(
    request, response: HttpResponse, body: InvestigationRequest, idempotency_key: IdempotencyKey
):
    """Ask a question; an analyst agent investigates it. Poll the status URL for the result."""
    job = services.start_investigation(
        tenant_id=request.tenant.id,
        question=body.question,
        request_id=idempotency_key,
        max_cost_cents=_max_cost(body),
    )
    return Status(202, _job_accepted(response, job, "get_investigation"))


@api.get(
    "/investigations/{job_id}",
    response={200: InvestigationOut, **UNAUTHENTICATED, **NOT_FOUND},
    tags=["jobs"],
)
def get_investigation(request, job_id: str):
    return _job_or_404(Investigation, job_id)


@api.post("/budget-optimizations", response={202: JobAccepted, **POST_ERRORS}, tags=["jobs"])
def start_budget_optimization(
    request, response: HttpResponse, body: BudgetOptimizationRequest, idempotency_key: IdempotencyKey
):
    """Allocate a total budget across channels; an LLM writes the synthesis."""
    job = services.start_budget_optimization(
        tenant_id=request.tenant.id,
        total_budget_cents=body.total_budget_cents,
        channels=body.channels,
        request_id=idempotency_key,
        max_cost_cents=_max_cost(body),
    )
    return Status(202, _job_accepted(response, job, "get_budget_optimization"))


@api.get(
    "/budget-optimizations/{job_id}",
    response={200: BudgetOptimizationOut, **UNAUTHENTICATED, **NOT_FOUND},
    tags=["jobs"],
)
def get_budget_optimization(request, job_id: str):
    return _job_or_404(BudgetOptimizationJob, job_id)


@api.post("/explanations", response={202: Accepted, **POST_ERRORS}, tags=["calls"])
def request_explanation(request, body: LLMCallRequest, idempotency_key: IdempotencyKey):
    request_id = services.request_llm_call(
        tenant_id=request.tenant.id,
        endpoint="explanation",
        prompt=body.prompt,
        request_id=idempotency_key,
        max_cost_cents=_max_cost(body),
    )
    return Status(202, Accepted(request_id=request_id))


@api.post("/route", response={202: Accepted, **POST_ERRORS}, tags=["calls"])
def request_route(request, body: LLMCallRequest, idempotency_key: IdempotencyKey):
    request_id = services.request_llm_call(
        tenant_id=request.tenant.id,
        endpoint="route",
        prompt=body.prompt,
        request_id=idempotency_key,
        max_cost_cents=_max_cost(body),
    )
    return Status(202, Accepted(request_id=request_id))


def _month_costs(request, month: datetime.date) -> MonthCostsOut:
    row = selectors.get_monthly_cost(month=month)
    return MonthCostsOut(
        tenant_id=request.tenant.id,
        month=month,
        total_cost_micros=row.total_cost_micros if row else 0,
        total_cost_cents=row.total_cost_cents if row else 0,
        total_calls=row.total_calls if row else 0,
        model_breakdown=row.model_breakdown if row else {},
    )


# YYYY-MM, a month some calendar has: years 0001-9999 (there is no year 0000).
MONTH_PATTERN = r"^([1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])-(0[1-9]|1[0-2])$"


@api.get("/costs", response={200: MonthCostsOut, **BAD_REQUEST, **UNAUTHENTICATED}, tags=["costs"])
def month_costs(
    request,
    month: Annotated[str | None, Query(None, pattern=MONTH_PATTERN, description="YYYY-MM")] = None,
):
    """A month's totals and per-model breakdown (default: the current UTC month)."""
    if month is None:
        return _month_costs(request, selectors.current_utc_month())
    return _month_costs(request, datetime.date.fromisoformat(f"{month}-01"))


@api.get("/costs/current", response={200: MonthCostsOut, **UNAUTHENTICATED}, tags=["costs"])
def current_month_costs(request):
    return _month_costs(request, selectors.current_utc_month())


def _period_out(period: selectors.PeriodStatus | None) -> BudgetPeriodOut | None:
    if period is None:
        return None
    return BudgetPeriodOut(
        cap_micros=period.cap_micros,
        spent_micros=period.spent_micros,
        reserved_micros=period.reserved_micros,
        remaining_micros=period.remaining_micros,
        cap_usd=format_micros(period.cap_micros),
        spent_usd=format_micros(period.spent_micros),
        reserved_usd=format_micros(period.reserved_micros),
        remaining_usd=format_micros(period.remaining_micros),
        resets_at=period.resets_at,
    )


@api.get("/budget", response={200: BudgetOut, **UNAUTHENTICATED}, tags=["costs"])
def budget(request):
    """The tenant's budget (set by the platform's operators) and where this month and hour
    stand: spent, reserved for calls in flight, remaining, thresholds crossed."""
    status = selectors.budget_status()
    if status is None:
        return BudgetOut(tenant_id=request.tenant.id, limited=False)
    return BudgetOut(
        tenant_id=request.tenant.id,
        limited=True,
        monthly=_period_out(status.monthly),
        hourly=_period_out(status.hourly),
        thresholds=status.thresholds,
        thresholds_crossed=status.thresholds_crossed,
        on_exceed=status.on_exceed,
    )


@api.get("/calls", response={200: CallPage, **BAD_REQUEST, **UNAUTHENTICATED}, tags=["calls"])
def list_calls(
    request,
    since: DateTime | None = None,
    limit: Annotated[int, Query(50, ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(None, description="A `next_cursor` this API returned.")] = None,
):
    """The tenant's calls, newest first; `since` keeps only calls at or after a time."""
    try:
        page = selectors.list_api_calls(since=since, limit=limit, cursor=cursor)
    except selectors.InvalidCursor as error:
        raise RequestValidationError([{"loc": ("query", "cursor"), "msg": str(error)}]) from None
    return CallPage(items=page.items, next_cursor=page.next_cursor)
