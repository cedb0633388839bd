"""The admin and the API docs as `./dev serve` (the README's way to open them) serves them,
in a real headless Chromium (Debian's package, driven by Playwright): styled by its own static
files, staff log in, inspect one tenant (a POST), see its monthly breakdown and none of the
other tenant's rows, stop; Swagger UI renders from local assets only. Saves a screenshot to
artifacts/ (the monthly breakdown, and the budget page with its bar and chart)."""

import datetime
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone
from playwright.sync_api import expect, sync_playwright

from llm.selectors import current_utc_month
from llm.services import admit_call, set_budget
from llm.stub_provider import LLMUsage
from llm.tests.factories import backdate_call, record_route_call
from llm.tests.workers import DevServer

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


@pytest.fixture(scope="module")
def dev_server(django_db_setup, tmp_path_factory):
    """One `./dev serve` for the module (it starts in seconds, not milliseconds)."""
    server = DevServer(tmp_path_factory.mktemp("dev-serve"))
    yield server
    server.stop()


class _AssetReferences(HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls = []

    def handle_starttag(self, tag, attrs):
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


def asset_references(html: bytes) -> list[str]:
    parser = _AssetReferences()
    parser.feed(html.decode())
    return parser.urls


def test_dev_serve_serves_the_admins_static_files_and_the_api_docs_from_the_package(dev_server):
    status, login_page, _ = dev_server.get("/admin/login/")
    assert status == 200
    assert "/static/admin/css/base.css" in asset_references(login_page)
    status, _, headers = dev_server.get("/static/admin/css/base.css")
    assert (status, headers["Content-Type"].split(";")[0]) == (200, "text/css")

    status, docs, _ = dev_server.get("/api/llm/docs")
    assert status == 200
    assets = asset_references(docs)
    assert not re.search(rb"https?://|//cdn", docs), "the docs page names a remote host"
    assert {url for url in assets if url.endswith(".js")} == {
        "/static/ninja/swagger-ui-bundle.js",
        "/static/ninja/swagger-ui-init.js",
    }
    assert "/static/ninja/swagger-ui.css" in assets
    for url in assets:
        assert url.startswith("/static/ninja/"), url
        status, body, headers = dev_server.get(url)
        assert status == 200 and body, url
        expected = {"js": "javascript", "css": "text/css", "svg": "image/svg+xml", "png": "image/png"}
        assert expected[url.rsplit(".", 1)[1]] in headers["Content-Type"], (url, headers["Content-Type"])


def test_staff_inspect_one_tenants_monthly_breakdown_in_a_real_browser(dev_server, tenant_a, tenant_b):
    assert Path(CHROMIUM).exists(), (
        "Debian's chromium is missing: `./dev test` installs it (apt-get install chromium)"
    )
    get_user_model().objects.create_superuser("operator", "ops@example.com", "a-long-test-password")
    record_route_call(tenant_a, model="test-small", cost_micros=1_200_150, request_id="a-route-1")
    record_route_call(tenant_a, model="test-small", cost_cents=30, request_id="a-route-2")
    record_route_call(tenant_a, model="test-large", cost_cents=900, request_id="a-route-3")
    record_route_call(tenant_b, model="test-medium", cost_cents=777, request_id="b-secret-request")
    ARTIFACTS.mkdir(exist_ok=True)
    url = dev_server.url

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        # Anything the pages ask of another host is refused and remembered: all must be local.
        remote = []
        page.route(
            re.compile(r"^(?!http://127\.0\.0\.1:\d+/)"),
            lambda route: (remote.append(route.request.url), route.abort()),
        )
        page.goto(f"{url}/admin/login/")
        # Styled by base.css (unstyled, the header is a plain block on a transparent background).
        header_style = page.eval_on_selector(
            "#header", "e => [getComputedStyle(e).display, getComputedStyle(e).backgroundColor]"
        )
        assert header_style[0] == "flex" and header_style[1] != "rgba(0, 0, 0, 0)", header_style
        page.fill("#id_username", "operator")
        page.fill("#id_password", "a-long-test-password")
        page.click("input[type=submit]")
        expect(page.locator("#inspected-tenant")).to_contain_text("No tenant chosen")

        page.goto(f"{url}/admin/llm/llmmonthlycost/")
        expect(page.locator("body")).to_contain_text("No tenant chosen: this table shows nothing")

        page.goto(f"{url}/admin/llm/tenant/")
        page.locator("tr", has_text="Tenant A").locator("button.inspect-tenant").click()
        expect(page.locator("#inspected-tenant")).to_contain_text("Inspecting tenant: Tenant A")

        page.goto(f"{url}/admin/llm/llmmonthlycost/")
        breakdown = page.locator("table.model-breakdown")
        expect(breakdown).to_contain_text("test-small")
        # Sub-cent amounts are shown exactly, whole cents as usual.
        expect(breakdown.locator("tr", has_text="test-small")).to_contain_text("$1.500150")
        expect(breakdown.locator("tr", has_text="test-large")).to_contain_text("$9.00")
        expect(page.locator("#result_list")).to_contain_text("$10.500150")
        body = page.locator("body")
        expect(body).not_to_contain_text("test-medium")
        expect(body).not_to_contain_text("$7.77")
        page.screenshot(path=str(ARTIFACTS / "admin-monthly-breakdown.png"), full_page=True)

        page.goto(f"{url}/admin/llm/llmapicall/?q=b-secret-request")
        expect(page.locator("body")).not_to_contain_text("b-secret-request")
        page.goto(f"{url}/admin/llm/llmapicall/")
        expect(page.locator("#result_list")).to_contain_text("a-route-3")

        page.locator("#inspected-tenant button", has_text="stop").click()
        expect(page.locator("#inspected-tenant")).to_contain_text("No tenant chosen")
        page.goto(f"{url}/admin/llm/llmapicall/")
        expect(page.locator("body")).not_to_contain_text("a-route-3")

        # The API docs: Swagger UI from the installed package renders the OpenAPI document.
        page.goto(f"{url}/api/llm/docs")
        expect(page.locator(".swagger-ui .info .title")).to_contain_text("Skeldir LLM API")
        expect(page.locator(".swagger-ui")).to_contain_text("/api/llm/investigations")
        assert remote == []
        browser.close()


def test_the_budget_page_draws_its_bar_and_daily_chart_in_a_real_browser(dev_server, tenant_a, tenant_b):
    """The budget's bar and the month's chart as a browser draws them (HTML, CSS and inline
    SVG from the app's own static files), saved to artifacts/admin-budget.png to look at."""
    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: `./dev test` installs it"
    get_user_model().objects.create_superuser("operator", "ops@example.com", "a-long-test-password")
    set_budget(tenant_id=tenant_a.id, monthly_cap_micros=8_000_000, hourly_cap_micros=6_000_000)
    month = current_utc_month()
    spend = [("test-large", 900_000), ("test-small", 250_000), ("test-medium", 400_000)]
    for day in range(1, 4):  # three days of this month (today at the latest), three models
        for model, micros in spend[: day + 1]:
            request_id = f"a-{model}-{day}"
            record_route_call(tenant_a, model=model, cost_micros=micros * day // 2, request_id=request_id)
            created_at = datetime.datetime(month.year, month.month, day, 12, tzinfo=datetime.UTC)
            backdate_call(tenant_a, request_id, min(created_at, timezone.now()))
    usage = LLMUsage(model="test-small", input_tokens=10, output_tokens=600_000, latency_ms=1)
    admit_call(tenant_id=tenant_a.id, request_id="a-in-flight", endpoint="route", usage=usage)
    set_budget(tenant_id=tenant_b.id, monthly_cap_micros=7_770_000)
    record_route_call(tenant_b, model="test-medium", cost_micros=3_330_000, request_id="b-call")
    ARTIFACTS.mkdir(exist_ok=True)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        remote = []
        page.route(
            re.compile(r"^(?!http://127\.0\.0\.1:\d+/)"),
            lambda route: (remote.append(route.request.url), route.abort()),
        )
        page.goto(f"{dev_server.url}/admin/login/?next=/admin/llm/tenant/")
        page.fill("#id_username", "operator")
        page.fill("#id_password", "a-long-test-password")
        page.click("input[type=submit]")
        page.locator("tr", has_text="Tenant A").locator("button.inspect-tenant").click()
        expect(page.locator("#inspected-tenant")).to_contain_text("Inspecting tenant: Tenant A")

        page.goto(f"{dev_server.url}/admin/llm/budget/")
        monthly = page.locator(".budget-bar[data-period=monthly]")
        expect(monthly.locator("dd.cap")).to_have_text("$8.00")
        expect(monthly.locator("dd.reserved")).to_have_text("$0.60")
        # Drawn by the app's stylesheet: the spent part has a width and a colour.
        spent = monthly.locator(".budget-bar-spent")
        assert spent.bounding_box()["width"] > 50
        assert spent.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(65, 118, 144)"
        expect(page.locator(".budget-bar[data-period=hourly] dd.cap")).to_have_text("$6.00")
        chart = page.locator("svg.daily-spend-chart")
        expect(chart).to_be_visible()
        days_and_models = {
            (min(day, timezone.now().day), m) for day in range(1, 4) for m, _ in spend[: day + 1]
        }
        assert chart.locator("rect").count() == len(days_and_models)  # one segment each
        legend = page.locator(".daily-spend-legend")
        for model, _ in spend:
            expect(legend).to_contain_text(model)
        body = page.locator("body")
        expect(body).not_to_contain_text("$7.77")
        expect(body).not_to_contain_text("$3.33")
        page.screenshot(path=str(ARTIFACTS / "admin-budget.png"), full_page=True)
        assert remote == []
        browser.close()
