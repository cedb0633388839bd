"""The admin in a real headless Chromium (Debian's package, driven by Playwright): log in as
staff, choose a tenant, see its monthly breakdown and none of the other tenant's rows.
Saves a screenshot to artifacts/."""

import shutil
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from playwright.sync_api import expect, sync_playwright

from llm.tests.factories import record_route_call

pytestmark = pytest.mark.django_db(transaction=True)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(settings.BASE_DIR) / "artifacts"
# The flags the machine's own browser checks use: no sandbox as root, and no background
# traffic to hosts this closed network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def test_staff_inspect_one_tenants_monthly_breakdown_in_a_real_browser(live_server, tenant_a, tenant_b):
    assert Path(CHROMIUM).exists(), (
        "Debian's chromium is missing: `./dev test` installs it (apt-get install chromium)"
    )
    get_user_model().objects.create_superuser("operator", "ops@example.com", "a-long-test-password")
    record_route_call(tenant_a, model="stub-small", cost_cents=120, request_id="a-route-1")
    record_route_call(tenant_a, model="stub-small", cost_cents=30, request_id="a-route-2")
    record_route_call(tenant_a, model="stub-large", cost_cents=900, request_id="a-route-3")
    record_route_call(tenant_b, model="stub-medium", cost_cents=777, request_id="b-secret-request")
    ARTIFACTS.mkdir(exist_ok=True)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{live_server.url}/admin/login/")
        page.fill("#id_username", "operator")
        page.fill("#id_password", "a-long-test-password")
        page.click("input[type=submit]")
        expect(page.locator("#inspected-tenant")).to_contain_text("No tenant chosen")

        page.goto(f"{live_server.url}/admin/llm/llmmonthlycost/")
        expect(page.locator("body")).to_contain_text("No tenant chosen: this table shows nothing")

        page.goto(f"{live_server.url}/admin/llm/tenant/")
        page.locator("tr", has_text="Tenant A").locator("button.inspect-tenant").click()
        expect(page.locator("#inspected-tenant")).to_contain_text("Inspecting tenant: Tenant A")

        page.goto(f"{live_server.url}/admin/llm/llmmonthlycost/")
        breakdown = page.locator("table.model-breakdown")
        expect(breakdown).to_contain_text("stub-small")
        expect(breakdown.locator("tr", has_text="stub-small")).to_contain_text("$1.50")
        expect(breakdown.locator("tr", has_text="stub-large")).to_contain_text("$9.00")
        expect(page.locator("#result_list")).to_contain_text("$10.50")
        body = page.locator("body")
        expect(body).not_to_contain_text("stub-medium")
        expect(body).not_to_contain_text("$7.77")
        page.screenshot(path=str(ARTIFACTS / "admin-monthly-breakdown.png"), full_page=True)

        page.goto(f"{live_server.url}/admin/llm/llmapicall/?q=b-secret-request")
        expect(page.locator("body")).not_to_contain_text("b-secret-request")
        page.goto(f"{live_server.url}/admin/llm/llmapicall/")
        expect(page.locator("#result_list")).to_contain_text("a-route-3")
        browser.close()
