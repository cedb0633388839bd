"""Row factories. Tenant rows go through the service; tenant-scoped rows are written by the
runtime role inside the tenant's context, as the application writes them."""

import datetime
import itertools
import uuid

from llm.models import (
    Budget,
    BudgetAlert,
    BudgetDecision,
    BudgetOptimizationJob,
    BudgetReservation,
    BudgetState,
    Investigation,
    LLMApiCall,
    LLMMonthlyCost,
    Tenant,
)
from llm.services import create_tenant
from skeldir.tenancy import tenant_context

_sequence = itertools.count(1)


class TenantFactory:
    def __init__(self):
        self.api_keys: dict[uuid.UUID, str] = {}

    def create(self, *, name: str | None = None) -> Tenant:
        tenant, api_key = create_tenant(name=name or f"Tenant {next(_sequence)}")
        self.api_keys[tenant.id] = api_key
        return tenant


def api_call_fields(**overrides) -> dict:
    n = next(_sequence)
    return {
        "endpoint": "route",
        "model": "stub-small",
        "input_tokens": 10 + n,
        "output_tokens": 5,
        "cost_micros": 30_000,
        "cost_cents": 3,
        "latency_ms": 40,
        "request_id": f"req-{n}",
        **overrides,
    }


def monthly_cost_fields(**overrides) -> dict:
    return {
        "month": datetime.date(2026, 1 + next(_sequence) % 12, 1),
        "total_cost_micros": 70_000,
        "total_cost_cents": 7,
        "total_calls": 2,
        "model_breakdown": {"stub-small": {"calls": 2, "cost_micros": 70_000, "cost_cents": 7}},
        **overrides,
    }


def investigation_fields(**overrides) -> dict:
    n = next(_sequence)
    return {"request_id": f"inv-{n}", "query": f"Why did channel {n} underperform?", **overrides}


def budget_job_fields(**overrides) -> dict:
    return {"request_id": f"budget-{next(_sequence)}", **overrides}


def _month(n: int) -> datetime.datetime:
    return datetime.datetime(2026, 1 + n % 12, 1, tzinfo=datetime.UTC)


def budget_fields(**overrides) -> dict:
    return {"monthly_cap_micros": 1_000_000, **overrides}


def budget_state_fields(**overrides) -> dict:
    return {"period": "month", "period_start": _month(next(_sequence)), "cap_micros": 100, **overrides}


def reservation_fields(**overrides) -> dict:
    n = next(_sequence)
    return {
        "request_id": f"res-{n}",
        "endpoint": "route",
        "model": "stub-small",
        "estimate_micros": 10,
        "month_start": _month(n),
        "lease_expires_at": _month(n) + datetime.timedelta(days=1),
        **overrides,
    }


def decision_fields(**overrides) -> dict:
    return {
        "request_id": f"dec-{next(_sequence)}",
        "endpoint": "route",
        "requested_model": "stub-small",
        "resolved_model": "stub-small",
        "estimate_micros": 10,
        "budget": "month",
        "cap_micros": 100,
        "remaining_micros": 50,
        "decision": "ALLOW",
        "reason": "test",
        **overrides,
    }


def alert_fields(**overrides) -> dict:
    n = next(_sequence)
    return {"month_start": _month(n), "threshold_percent": 1 + n % 100, "spent_micros": 50, "cap_micros": 100}


FIELDS_BY_MODEL = {
    LLMApiCall: api_call_fields,
    LLMMonthlyCost: monthly_cost_fields,
    Investigation: investigation_fields,
    BudgetOptimizationJob: budget_job_fields,
    Budget: budget_fields,
    BudgetState: budget_state_fields,
    BudgetReservation: reservation_fields,
    BudgetDecision: decision_fields,
    BudgetAlert: alert_fields,
}
# Tables the runtime role may only append to, and the one it may delete from.
APPEND_ONLY_MODELS = (LLMApiCall, BudgetDecision, BudgetAlert)
DELETABLE_MODELS = (Budget,)
TENANT_MODELS = list(FIELDS_BY_MODEL)


def create_tenant_row(model, *, tenant: Tenant, **overrides):
    """Insert one row of `model` for `tenant`, inside that tenant's context."""
    with tenant_context(tenant.id):
        return model.objects.create(tenant_id=tenant.id, **FIELDS_BY_MODEL[model](**overrides))


MONEY_FIELDS = {
    LLMMonthlyCost: "total_cost_cents",
    Budget: "monthly_cap_micros",
    BudgetState: "spent_micros",
    BudgetReservation: "estimate_micros",
    BudgetDecision: "estimate_micros",
    BudgetAlert: "spent_micros",
}


def cost_field(model) -> str:
    """An integer money column of every tenant table, for update probes."""
    return MONEY_FIELDS.get(model, "cost_cents")


PROMPTS = {
    "route": {"request": "Which report explains last week's ROAS change?"},
    "explanation": {"metric": "roas", "channel": "google_ads"},
    "investigation": {"question": "Why is Google Ads underperforming this month?"},
    "budget_optimization": {
        "total_budget_cents": 100_000,
        "channels": {"google_ads": 3, "meta_ads": 1},
    },
}


def payload_data(tenant_id, endpoint: str = "route", **overrides) -> dict:
    """A valid task payload as JSON-ready data, as a client would enqueue it."""
    return {
        "tenant_id": str(tenant_id),
        "correlation_id": f"test-{next(_sequence)}",
        "prompt": dict(PROMPTS[endpoint]),
        "max_cost_cents": 100_000,
        **overrides,
    }


# Test models, priced by `ensure_test_prices` at 1 µUSD per output token and nothing else: a
# call's cost in µUSD is the output tokens it reports (the internal `output_tokens` knob).
TEST_MODELS = ("test-small", "test-medium", "test-large")
TEST_PRICES_FROM = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)


def ensure_test_prices() -> None:
    """The stub models' prices (migration 0007's) and the test models', as the owner: a
    transactional test's flush empties the catalogue with every other table."""
    import importlib

    from django.db import connections

    from llm.prices import CATALOGUE

    seed = importlib.import_module("llm.migrations.0007_price_catalogue")
    rows = [(m, "stub", i, c, o, seed.STUB_PRICES_FROM) for m, i, c, o in seed.STUB_PRICES]
    rows += [(m, "test", 0, 0, 1_000_000, TEST_PRICES_FROM) for m in TEST_MODELS]
    with connections["owner"].cursor() as cursor:
        for row in rows:
            cursor.execute(
                "INSERT INTO llm_model_prices (model, provider, input_micros_per_mtok,"
                " cached_input_micros_per_mtok, output_micros_per_mtok, valid_from)"
                " SELECT %s, %s, %s, %s, %s, %s"
                " WHERE NOT EXISTS (SELECT FROM llm_model_prices WHERE model = %s)",
                [*row, row[0]],
            )
    CATALOGUE.invalidate()


def record_route_call(
    tenant, *, model: str = "test-small", cost_cents: int = 5, cost_micros: int | None = None, **overrides
):
    """Record one route call for `tenant` the way the worker does, on a test model, costing
    exactly `cost_micros` (or `cost_cents`)."""
    from llm.payloads import LLMTaskPayload
    from llm.services import route_request

    assert model in TEST_MODELS, f"{model} is not a test model: its cost cannot be chosen"
    micros = cost_cents * 10_000 if cost_micros is None else cost_micros
    prompt = {"model": model, "output_tokens": micros}
    return route_request(LLMTaskPayload.parse(payload_data(tenant.id, prompt=prompt, **overrides)))


def backdate_call(tenant, request_id: str, created_at: datetime.datetime) -> None:
    """Move a recorded call to another time, as the owner inside the tenant (the runtime role
    never updates calls): spend on days other than today, for the daily charts. Nothing else
    moves with it (its month's row, the budget's state)."""
    from django.db import connections

    with tenant_context(tenant.id, using="owner"), connections["owner"].cursor() as cursor:
        cursor.execute(
            "UPDATE llm_api_calls SET created_at = %s WHERE request_id = %s", [created_at, request_id]
        )
        assert cursor.rowcount == 1


def expected_cost_micros(usage) -> int:
    """What recording `usage` costs now, by the catalogue's price in force."""
    from llm import prices

    return prices.call_cost_micros(
        price=prices.price_in_force(usage.model),
        input_tokens=usage.input_tokens,
        cached_input_tokens=usage.cached_input_tokens,
        output_tokens=usage.output_tokens,
    )
