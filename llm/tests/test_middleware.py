"""TenantMiddleware through the test client and the current-month costs endpoint."""

import pytest
from django.db import connection
from django.test import RequestFactory

from llm.middleware import TenantMiddleware
from llm.models import LLMApiCall, LLMMonthlyCost
from llm.selectors import current_utc_month
from llm.tests.factories import create_tenant_row
from skeldir.tenancy import current_tenant_id

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/api/llm/costs/current"


@pytest.fixture
def month_rows(tenant_a, tenant_b):
    month = current_utc_month()
    create_tenant_row(
        LLMMonthlyCost,
        tenant=tenant_a,
        month=month,
        total_cost_micros=1_200_000,
        total_cost_cents=120,
        total_calls=4,
        model_breakdown={"stub-small": {"calls": 4, "cost_micros": 1_200_000, "cost_cents": 120}},
    )
    create_tenant_row(
        LLMMonthlyCost,
        tenant=tenant_b,
        month=month,
        total_cost_micros=9_990_000,
        total_cost_cents=999,
        total_calls=9,
    )


def test_a_valid_key_reads_its_own_tenants_month(client, tenant_factory, tenant_a, month_rows):
    api_key = tenant_factory.api_keys[tenant_a.id]
    response = client.get(URL, headers={"Authorization": f"Bearer {api_key}"})
    assert response.status_code == 200
    assert response.json() == {
        "tenant_id": str(tenant_a.id),
        "month": current_utc_month().isoformat(),
        "total_cost_micros": 1_200_000,
        "total_cost_cents": 120,
        "total_calls": 4,
        "model_breakdown": {"stub-small": {"calls": 4, "cost_micros": 1_200_000, "cost_cents": 120}},
    }


def test_a_tenant_with_no_calls_this_month_reads_zeros(client, tenant_factory, month_rows):
    fresh = tenant_factory.create(name="Fresh")
    response = client.get(URL, headers={"Authorization": f"Bearer {tenant_factory.api_keys[fresh.id]}"})
    assert response.status_code == 200
    assert response.json()["total_calls"] == 0
    assert response.json()["model_breakdown"] == {}


@pytest.mark.parametrize(
    "header",
    ["Bearer sk_wrong-key", "Bearer ", "Basic dXNlcjpwYXNz", "sk_no_scheme", "Bearer x' OR 1=1 --"],
)
def test_a_wrong_or_malformed_key_gets_a_401_json_error(client, month_rows, header):
    response = client.get(URL, headers={"Authorization": header})
    assert response.status_code == 401
    assert response["Content-Type"] == "application/json"
    assert "error" in response.json()
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_no_key_is_told_to_authenticate(client, month_rows):
    response = client.get(URL)
    assert response.status_code == 401
    assert "Authentication required" in response.json()["error"]


def test_a_request_without_a_key_runs_with_no_tenant_and_sees_no_rows(tenant_a, month_rows):
    create_tenant_row(LLMApiCall, tenant=tenant_a)
    observed = {}

    def view(request):
        observed["tenant"] = request.tenant
        observed["tenant_in_force"] = current_tenant_id()
        observed["rows"] = LLMApiCall.objects.count() + LLMMonthlyCost.objects.count()
        return None

    TenantMiddleware(view)(RequestFactory().get(URL))
    assert observed == {"tenant": None, "tenant_in_force": None, "rows": 0}


def test_a_valid_key_runs_the_view_inside_the_tenant_context(tenant_factory, tenant_a, tenant_b, month_rows):
    observed = {}

    def view(request):
        observed["tenant_in_force"] = current_tenant_id()
        observed["in_transaction"] = connection.in_atomic_block
        observed["tenants_seen"] = set(LLMMonthlyCost.objects.values_list("tenant_id", flat=True))

    api_key = tenant_factory.api_keys[tenant_b.id]
    TenantMiddleware(view)(RequestFactory().get(URL, headers={"Authorization": f"Bearer {api_key}"}))
    assert observed == {"tenant_in_force": tenant_b.id, "in_transaction": True, "tenants_seen": {tenant_b.id}}
    assert current_tenant_id() is None
