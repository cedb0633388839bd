"""The admin through the test client: tenant choice in the session (a CSRF-checked POST, for
holders of the inspect permission only), read-only audit tables, API keys shown once, nothing
of another tenant, and Celery's task results kept out."""

import re
import uuid

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django_celery_results.models import GroupResult, TaskResult

from llm.api_keys import hash_api_key
from llm.middleware import INSPECTED_TENANT_SESSION_KEY
from llm.models import Investigation, LLMApiCall, LLMMonthlyCost, Tenant
from llm.payloads import LLMTaskPayload
from llm.services import run_investigation
from llm.tests.factories import payload_data, record_route_call
from skeldir.tenancy import tenant_context

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def staff_client(client):
    user = get_user_model().objects.create_superuser("operator", "ops@example.com", "a-long-test-password")
    client.force_login(user)
    return client


@pytest.fixture
def two_tenants_with_calls(tenant_a, tenant_b):
    for tenant, model, request_id in ((tenant_a, "test-small", "a-req"), (tenant_b, "test-medium", "b-req")):
        record_route_call(tenant, model=model, cost_cents=42, request_id=request_id)
    run_investigation(LLMTaskPayload.parse(payload_data(tenant_a.id, "investigation", request_id="a-inv")))
    return tenant_a, tenant_b


def inspect(client, tenant):
    response = client.post(f"/admin/llm/tenant/{tenant.id}/inspect/", follow=True)
    assert response.status_code == 200
    assert f"Inspecting tenant: <strong>{tenant.name}</strong>" in response.content.decode()


def test_with_no_tenant_chosen_tenant_tables_show_nothing_and_say_why(staff_client, two_tenants_with_calls):
    page = staff_client.get("/admin/llm/llmapicall/").content.decode()
    assert "No tenant chosen: this table shows nothing" in page
    assert "a-req" not in page and "b-req" not in page
    assert "0 LLM API calls" in page


def test_a_chosen_tenant_shows_its_rows_and_none_of_the_others(staff_client, two_tenants_with_calls):
    tenant_a, tenant_b = two_tenants_with_calls
    inspect(staff_client, tenant_a)
    calls = staff_client.get("/admin/llm/llmapicall/").content.decode()
    assert "a-req" in calls and "b-req" not in calls
    costs = staff_client.get("/admin/llm/llmmonthlycost/").content.decode()
    assert "test-small" in costs and "test-medium" not in costs
    assert "class='model-breakdown'" in costs
    inspect(staff_client, tenant_b)
    assert "b-req" in staff_client.get("/admin/llm/llmapicall/").content.decode()
    staff_client.post("/admin/llm/tenant/stop-inspecting/")
    assert "b-req" not in staff_client.get("/admin/llm/llmapicall/").content.decode()


def test_search_and_filters_work_inside_the_tenant(staff_client, two_tenants_with_calls):
    tenant_a, _ = two_tenants_with_calls
    inspect(staff_client, tenant_a)
    found = staff_client.get("/admin/llm/llmapicall/", {"q": "a-inv"}).content.decode()
    assert "a-inv" in found and "a-req" not in found
    routes = staff_client.get("/admin/llm/llmapicall/", {"endpoint": "route"}).content.decode()
    assert "a-req" in routes and "a-inv" not in routes
    assert staff_client.get("/admin/llm/investigation/", {"status__exact": "completed"}).status_code == 200


def test_calls_and_monthly_costs_are_read_only(staff_client, two_tenants_with_calls):
    tenant_a, _ = two_tenants_with_calls
    inspect(staff_client, tenant_a)
    with tenant_context(tenant_a.id):
        call = LLMApiCall.objects.get(request_id="a-req")
        month = LLMMonthlyCost.objects.get()
    for url in ("/admin/llm/llmapicall/add/", "/admin/llm/llmmonthlycost/add/"):
        assert staff_client.get(url).status_code == 403
    for url in (f"/admin/llm/llmapicall/{call.id}/delete/", f"/admin/llm/llmmonthlycost/{month.id}/delete/"):
        assert staff_client.post(url, {"post": "yes"}).status_code == 403
    detail = staff_client.get(f"/admin/llm/llmmonthlycost/{month.id}/change/")
    assert detail.status_code == 200  # viewable, with its breakdown table
    assert "class='model-breakdown'" in detail.content.decode()
    assert 'name="_save"' not in detail.content.decode()
    assert (
        staff_client.post(f"/admin/llm/llmmonthlycost/{month.id}/change/", {"total_calls": 0}).status_code
        == 403
    )


def test_a_job_status_can_be_changed_within_the_tenant(staff_client, two_tenants_with_calls):
    tenant_a, _ = two_tenants_with_calls
    inspect(staff_client, tenant_a)
    with tenant_context(tenant_a.id):
        job = Investigation.objects.get()
    response = staff_client.post(f"/admin/llm/investigation/{job.id}/change/", {"status": "failed"})
    assert response.status_code == 302
    with tenant_context(tenant_a.id):
        job.refresh_from_db()
    assert job.status == "failed"


def test_creating_a_tenant_shows_its_api_key_once_and_stores_only_the_hash(staff_client):
    response = staff_client.post(
        "/admin/llm/tenant/add/", {"name": "Acme", "notification_email": ""}, follow=True
    )
    page = response.content.decode()
    tenant = Tenant.objects.get(name="Acme")
    key = page.split("shown only now (it is stored only as a hash): ")[1].split("<")[0].strip()
    assert key.startswith("sk_")
    assert tenant.api_key_hash == hash_api_key(key) != key
    again = staff_client.get(f"/admin/llm/tenant/{tenant.id}/change/").content.decode()
    assert key not in again
    api = staff_client.get("/api/llm/costs/current", headers={"Authorization": f"Bearer {key}"})
    assert api.json()["tenant_id"] == str(tenant.id)


def test_a_blank_tenant_name_is_refused(staff_client):
    response = staff_client.post("/admin/llm/tenant/add/", {"name": "   "})
    assert response.status_code == 200
    assert not Tenant.objects.exists()


def staff_user(username, *permissions):
    """An active staff member (not a superuser) holding only `permissions` ("app.codename")."""
    user = get_user_model().objects.create_user(username, password="a-long-test-password", is_staff=True)
    for permission in permissions:
        app_label, codename = permission.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    return user


def csrf_token_of_form(page: str, form_id: str) -> str:
    form = re.search(rf'<form id="{form_id}".*?</form>', page, re.S)
    assert form, f"no form {form_id!r} on the page"
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.group(0)).group(1)


def chosen_tenant(client):
    return client.session.get(INSPECTED_TENANT_SESSION_KEY)


def test_inspect_and_stop_are_posts_with_a_csrf_token_never_gets(tenant_a, tenant_b):
    client = Client(enforce_csrf_checks=True)
    client.force_login(
        get_user_model().objects.create_superuser("operator", "ops@example.com", "a-long-test-password")
    )
    inspect_url, stop_url = f"/admin/llm/tenant/{tenant_a.id}/inspect/", "/admin/llm/tenant/stop-inspecting/"
    assert client.get(inspect_url).status_code == 405  # what a cross-site link would do
    assert chosen_tenant(client) is None

    tenants_page = client.get("/admin/llm/tenant/").content.decode()
    assert f"form='inspect-tenant-form' formaction='{inspect_url}'" in tenants_page
    assert client.post(inspect_url).status_code == 403  # a cross-site form: no token
    assert chosen_tenant(client) is None
    token = csrf_token_of_form(tenants_page, "inspect-tenant-form")
    response = client.post(inspect_url, {"csrfmiddlewaretoken": token})
    assert response.status_code == 302 and response["Location"] == "/admin/"
    assert chosen_tenant(client) == str(tenant_a.id)

    banner = client.get("/admin/").content.decode()
    assert "Inspecting tenant: <strong>Tenant A</strong>" in banner
    assert client.get(stop_url).status_code == 405
    assert client.post(stop_url).status_code == 403
    assert chosen_tenant(client) == str(tenant_a.id)
    token = csrf_token_of_form(banner, "stop-inspecting-form")
    response = client.post(stop_url, {"csrfmiddlewaretoken": token})
    assert response.status_code == 302
    assert chosen_tenant(client) is None


def test_inspecting_needs_the_permission_and_without_it_every_id_gets_the_same_403(client, tenant_a):
    user = staff_user("viewer", "llm.view_tenant")
    client.force_login(user)
    ids = {"existing": tenant_a.id, "unknown": uuid.uuid4(), "malformed": "not-a-uuid"}
    refused = {name: client.post(f"/admin/llm/tenant/{id_}/inspect/") for name, id_ in ids.items()}
    assert {name: response.status_code for name, response in refused.items()} == dict.fromkeys(ids, 403)
    assert len({response.content for response in refused.values()}) == 1
    assert chosen_tenant(client) is None
    assert "inspect-tenant" not in client.get("/admin/llm/tenant/").content.decode()

    user.user_permissions.add(Permission.objects.get(codename="inspect_tenant"))
    answers = {name: client.post(f"/admin/llm/tenant/{id_}/inspect/") for name, id_ in ids.items()}
    assert {name: response.status_code for name, response in answers.items()} == {
        "existing": 302,
        "unknown": 404,
        "malformed": 404,
    }
    assert chosen_tenant(client) == str(tenant_a.id)
    assert "inspect-tenant" in client.get("/admin/llm/tenant/").content.decode()


def test_a_revoked_inspect_permission_enters_no_tenant(client, two_tenants_with_calls):
    tenant_a, _ = two_tenants_with_calls
    user = staff_user("auditor", "llm.inspect_tenant", "llm.view_llmapicall")
    client.force_login(user)
    inspect(client, tenant_a)
    assert "a-req" in client.get("/admin/llm/llmapicall/").content.decode()

    user.user_permissions.remove(Permission.objects.get(codename="inspect_tenant"))
    page = client.get("/admin/llm/llmapicall/").content.decode()
    assert "a-req" not in page
    assert "No tenant chosen: this table shows nothing" in page
    assert chosen_tenant(client) is None  # the choice is dropped, not kept for later


def test_celery_task_results_are_kept_out_of_the_admin(staff_client):
    # Not tenant-sealed: results of every tenant's tasks.
    assert not admin.site.is_registered(TaskResult)
    assert not admin.site.is_registered(GroupResult)
    for url in (
        "/admin/django_celery_results/",
        "/admin/django_celery_results/taskresult/",
        "/admin/django_celery_results/groupresult/",
    ):
        assert staff_client.get(url).status_code == 404, url
    assert "django_celery_results" not in staff_client.get("/admin/").content.decode()
