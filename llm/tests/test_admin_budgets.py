"""Budgets in the admin, through the test client on the real database as the runtime role:
superusers set a tenant's budget in USD (stored in µUSD, through the services, refused with
the reason on the form and nothing written); other staff only read it; decisions, alerts
with their deliveries and reservations are read-only; nothing of another tenant shows; the
budget bar and the daily spend chart show the inspected tenant's figures."""

import datetime
import html
import re

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from llm.models import AlertDelivery, Budget, BudgetState, LLMApiCall
from llm.selectors import current_utc_month, daily_spend_by_model
from llm.services import DeliveryFailed, admit_call, configure_alerts, deliver_alert, set_budget
from llm.stub_provider import LLMUsage
from llm.tests.factories import backdate_call, record_route_call
from llm.tests.test_admin import inspect, staff_user
from skeldir.tenancy import tenant_context

pytestmark = pytest.mark.django_db(transaction=True)

BUDGETS = "/admin/llm/budget/"
TENANT_PAGES = (
    BUDGETS,
    "/admin/llm/budgetdecision/",
    "/admin/llm/budgetalert/",
    "/admin/llm/alertdelivery/",
    "/admin/llm/budgetreservation/",
)


@pytest.fixture
def superuser_client(client):
    client.force_login(
        get_user_model().objects.create_superuser("root", "root@example.com", "a-long-password")
    )
    return client


def page(client, url, **params) -> str:
    response = client.get(url, params)
    assert response.status_code == 200, (url, response.status_code)
    return html.unescape(response.content.decode())


def stored_budget(tenant) -> Budget | None:
    with tenant_context(tenant.id):
        return Budget.objects.first()


def budget_form(**overrides) -> dict:
    return {
        "monthly_cap_usd": "12.345678",
        "hourly_cap_usd": "0.5",
        "thresholds": "50,90",
        "on_exceed": "fallback",
        "fallback_models": "test-small",
        **overrides,
    }


def test_a_superuser_sets_changes_and_removes_the_budget_in_usd_stored_in_micros(superuser_client, tenant_a):
    inspect(superuser_client, tenant_a)
    assert "No budget: this tenant's calls are unlimited." in page(superuser_client, BUDGETS)
    response = superuser_client.post(f"{BUDGETS}add/", budget_form())
    assert response.status_code == 302, response.content.decode()
    budget = stored_budget(tenant_a)
    assert (budget.monthly_cap_micros, budget.hourly_cap_micros) == (12_345_678, 500_000)
    assert (budget.thresholds, budget.on_exceed, budget.fallback_models) == (
        [50, 90],
        "fallback",
        ["test-small"],
    )

    listing = page(superuser_client, BUDGETS)
    assert "$12.345678" in listing and "$0.50" in listing and "50%, 90%" in listing
    assert 'href="/admin/llm/budget/add/"' not in listing  # one per tenant: changed, not added again
    assert superuser_client.get(f"{BUDGETS}add/").status_code == 403
    change_page = page(superuser_client, f"{BUDGETS}{budget.id}/change/")
    assert 'name="monthly_cap_usd" value="12.345678"' in change_page
    assert 'name="hourly_cap_usd" value="0.5"' in change_page

    record_route_call(tenant_a, cost_micros=1_000)  # the month's state now exists
    form = budget_form(monthly_cap_usd="20", hourly_cap_usd="", on_exceed="block", fallback_models="")
    assert superuser_client.post(f"{BUDGETS}{budget.id}/change/", form).status_code == 302
    budget = stored_budget(tenant_a)
    assert (budget.monthly_cap_micros, budget.hourly_cap_micros, budget.fallback_models) == (
        20_000_000,
        None,
        [],
    )
    with tenant_context(tenant_a.id):  # through set_budget: the month in progress took the new cap
        assert BudgetState.objects.get(period="month").cap_micros == 20_000_000

    assert superuser_client.post(f"{BUDGETS}{budget.id}/delete/", {"post": "yes"}).status_code == 302
    assert stored_budget(tenant_a) is None
    with tenant_context(tenant_a.id):
        assert BudgetState.objects.exists()  # its history stays


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"monthly_cap_usd": "-1"}, "Invalid budget: the monthly cap must be a positive amount."),
        ({"monthly_cap_usd": "0"}, "Invalid budget: the monthly cap must be a positive amount."),
        ({"hourly_cap_usd": "-0.000001"}, "the hourly cap must be a positive amount (or none)"),
        ({"monthly_cap_usd": "0.0000001"}, "Ensure that there are no more than 6 decimal places."),
        ({"fallback_models": "test-small,no-such-model"}, "fallback model 'no-such-model'"),
        ({"fallback_models": ""}, "a fallback budget needs at least one fallback model"),
        ({"thresholds": "50,150"}, "thresholds are whole percents from 1 to 100"),
        ({"thresholds": "50,x"}, "Item 2 in the array did not validate"),
    ],
)
def test_an_invalid_budget_shows_the_reason_and_writes_nothing(superuser_client, tenant_a, overrides, error):
    inspect(superuser_client, tenant_a)
    response = superuser_client.post(f"{BUDGETS}add/", budget_form(**overrides))
    assert response.status_code == 200
    assert error in html.unescape(response.content.decode())
    assert stored_budget(tenant_a) is None

    set_budget(tenant_id=tenant_a.id, monthly_cap_micros=1_000_000)
    budget = stored_budget(tenant_a)
    response = superuser_client.post(f"{BUDGETS}{budget.id}/change/", budget_form(**overrides))
    assert response.status_code == 200
    assert error in html.unescape(response.content.decode())
    assert stored_budget(tenant_a).monthly_cap_micros == 1_000_000
    assert stored_budget(tenant_a).updated_at == budget.updated_at


def test_staff_without_the_superuser_bit_only_read_the_budget(client, tenant_a):
    set_budget(tenant_id=tenant_a.id, monthly_cap_micros=1_500_000, thresholds=[75])
    budget = stored_budget(tenant_a)
    user = staff_user("viewer", "llm.inspect_tenant", "llm.view_budget")
    client.force_login(user)
    inspect(client, tenant_a)
    change_page = page(client, f"{BUDGETS}{budget.id}/change/")
    assert "$1.50" in change_page and "75%" in change_page
    assert 'name="_save"' not in change_page and 'name="monthly_cap_usd"' not in change_page
    assert 'href="/admin/llm/budget/add/"' not in page(client, BUDGETS)
    for extra in ((), ("llm.change_budget", "llm.add_budget", "llm.delete_budget")):
        # Budgets are money and policy, like prices: superusers only, whatever else is granted.
        for permission in extra:
            app_label, codename = permission.split(".")
            user.user_permissions.add(
                Permission.objects.get(content_type__app_label=app_label, codename=codename)
            )
        attempt = client.post(f"{BUDGETS}{budget.id}/change/", budget_form(monthly_cap_usd="999"))
        assert attempt.status_code == 403
        assert client.post(f"{BUDGETS}{budget.id}/delete/", {"post": "yes"}).status_code == 403
        assert client.post(f"{BUDGETS}add/", budget_form()).status_code == 403
        assert stored_budget(tenant_a).monthly_cap_micros == 1_500_000


@pytest.fixture
def two_budgeted_tenants(tenant_a, tenant_b, run_tasks_eagerly):
    """Each tenant with a budget, alerts by email (delivered at once, to Django's test mailbox),
    a crossed threshold, a call and a reservation held; amounts and ids that tell them apart."""
    for tenant, cap, threshold, prefix in ((tenant_a, 1_000_000, 50, "a"), (tenant_b, 7_770_000, 37, "b")):
        configure_alerts(tenant_id=tenant.id, email=f"ops@{prefix}-tenant.example", webhook_url=None)
        set_budget(tenant_id=tenant.id, monthly_cap_micros=cap, thresholds=[threshold])
        record_route_call(tenant, cost_micros=cap * 6 // 10, request_id=f"{prefix}-spent-call")
        usage = LLMUsage(model="test-small", input_tokens=10, output_tokens=cap // 10, latency_ms=1)
        admit_call(tenant_id=tenant.id, request_id=f"{prefix}-held-call", endpoint="route", usage=usage)
    return tenant_a, tenant_b


def test_while_inspecting_a_nothing_of_b_shows(superuser_client, two_budgeted_tenants):
    tenant_a, tenant_b = two_budgeted_tenants
    inspect(superuser_client, tenant_a)
    budgets = page(superuser_client, BUDGETS)
    assert "$1.00" in budgets and "$7.77" not in budgets and "$4.66" not in budgets
    decisions = page(superuser_client, "/admin/llm/budgetdecision/")
    assert "a-spent-call" in decisions and "a-held-call" in decisions
    assert "b-spent-call" not in decisions and "b-held-call" not in decisions
    alerts = page(superuser_client, "/admin/llm/budgetalert/")
    assert "50%" in alerts and "37%" not in alerts
    deliveries = page(superuser_client, "/admin/llm/alertdelivery/")
    assert "ops@a-tenant.example" in deliveries and "b-tenant" not in deliveries
    reservations = page(superuser_client, "/admin/llm/budgetreservation/")
    assert "a-held-call" in reservations and "b-held-call" not in reservations
    # Another tenant's budget by its id: not found, as if it did not exist.
    other = stored_budget(tenant_b)
    response = superuser_client.get(f"{BUDGETS}{other.id}/change/", follow=True)
    assert "$7.77" not in response.content.decode()
    assert superuser_client.post(f"{BUDGETS}{other.id}/delete/", {"post": "yes"}).status_code == 302
    assert stored_budget(tenant_b) is not None
    found = page(superuser_client, "/admin/llm/budgetdecision/", q="b-spent-call")
    assert "0 results" in found  # (the search box repeats the query)


def test_with_no_tenant_chosen_budget_pages_show_nothing_and_say_why(superuser_client, two_budgeted_tenants):
    for url in TENANT_PAGES:
        body = page(superuser_client, url)
        assert "No tenant chosen: this table shows nothing" in body, url
        for secret in ("-held-call", "-spent-call", "tenant.example", "$1.00", "$7.77"):
            assert secret not in body, (url, secret)
    assert "budget-bar" not in page(superuser_client, BUDGETS)
    assert "daily-spend-chart" not in page(superuser_client, BUDGETS)
    assert 'href="/admin/llm/budget/add/"' not in page(superuser_client, BUDGETS)


def test_decisions_alerts_deliveries_and_reservations_are_read_only(superuser_client, two_budgeted_tenants):
    tenant_a, _ = two_budgeted_tenants
    inspect(superuser_client, tenant_a)
    for model in ("budgetdecision", "budgetalert", "alertdelivery", "budgetreservation"):
        listing = page(superuser_client, f"/admin/llm/{model}/")
        assert f'href="/admin/llm/{model}/add/"' not in listing
        assert superuser_client.get(f"/admin/llm/{model}/add/").status_code == 403
        row_id = re.search(rf'href="/admin/llm/{model}/([0-9a-f-]{{36}})/change/', listing).group(1)
        detail = page(superuser_client, f"/admin/llm/{model}/{row_id}/change/")
        assert 'name="_save"' not in detail
        assert (
            superuser_client.post(f"/admin/llm/{model}/{row_id}/delete/", {"post": "yes"}).status_code == 403
        )
    decisions = page(superuser_client, "/admin/llm/budgetdecision/", decision__exact="ALLOW")
    # Newest first: the held call was admitted after the spent one.
    assert decisions.index("a-held-call") < decisions.index("a-spent-call")
    assert "$0.10" in decisions  # the held call's estimate, in USD


def test_alerts_show_their_deliveries_state_and_attempts(superuser_client, two_budgeted_tenants):
    tenant_a, _ = two_budgeted_tenants
    with tenant_context(tenant_a.id):
        alert = AlertDelivery.objects.select_related("alert").get(channel="email").alert
    # A webhook that cannot be reached: the failed attempt and its error are kept.
    configure_alerts(tenant_id=tenant_a.id, email=None, webhook_url="http://127.0.0.1:9/hook")
    with tenant_context(tenant_a.id):
        webhook = AlertDelivery.objects.create(
            tenant_id=tenant_a.id, alert=alert, channel="webhook", target="http://127.0.0.1:9/hook"
        )
    with pytest.raises(DeliveryFailed):
        deliver_alert(tenant_id=tenant_a.id, delivery_id=webhook.id)

    inspect(superuser_client, tenant_a)
    alerts = page(superuser_client, "/admin/llm/budgetalert/")
    assert "email: delivered (1 attempt)" in alerts
    assert "webhook: pending (1 attempt) - URLError" in alerts
    detail = page(superuser_client, f"/admin/llm/budgetalert/{alert.id}/change/")
    assert "ops@a-tenant.example" in detail and "http://127.0.0.1:9/hook" in detail
    assert "$0.60" in detail and "$1.00" in detail  # spent at the crossing, of the cap
    deliveries = page(superuser_client, "/admin/llm/alertdelivery/", status__exact="pending")
    assert "http://127.0.0.1:9/hook" in deliveries and "Connection refused" in deliveries
    assert "ops@a-tenant.example" not in deliveries


def bar(body: str, period: str) -> str:
    found = re.search(rf'<div class="budget-bar" data-period="{period}">(.*?)</dl>', body, re.S)
    assert found, f"no {period} bar on the page"
    return found.group(1)


def test_the_budget_bar_shows_spent_reserved_and_cap(superuser_client, tenant_a):
    set_budget(tenant_id=tenant_a.id, monthly_cap_micros=1_000_000, hourly_cap_micros=900_000)
    record_route_call(tenant_a, cost_micros=600_000)
    usage = LLMUsage(model="test-small", input_tokens=1, output_tokens=100_000, latency_ms=1)
    admit_call(tenant_id=tenant_a.id, request_id="held", endpoint="route", usage=usage)
    inspect(superuser_client, tenant_a)
    budget_id = stored_budget(tenant_a).id
    for url in (BUDGETS, f"{BUDGETS}{budget_id}/change/"):
        monthly = bar(page(superuser_client, url), "monthly")
        assert '<dd class="spent">$0.60</dd>' in monthly
        assert '<dd class="reserved">$0.10</dd>' in monthly
        assert '<dd class="remaining">$0.30</dd>' in monthly
        assert '<dd class="cap">$1.00</dd>' in monthly
        assert 'class="budget-bar-spent" style="width:60.00%"' in monthly
        assert 'class="budget-bar-reserved" style="width:10.00%"' in monthly
        # The thresholds: 50% crossed by the settled spend, 80% and 100% not.
        assert 'class="budget-bar-threshold crossed" style="left:50.00%"' in monthly
        assert 'class="budget-bar-threshold" style="left:80.00%"' in monthly
        hourly = bar(page(superuser_client, url), "hourly")
        assert '<dd class="cap">$0.90</dd>' in hourly and '<dd class="spent">$0.60</dd>' in hourly


def test_a_cap_lowered_below_the_spend_shows_by_how_much_it_is_over(superuser_client, tenant_a):
    set_budget(tenant_id=tenant_a.id, monthly_cap_micros=1_000_000)
    record_route_call(tenant_a, cost_micros=800_000)
    set_budget(tenant_id=tenant_a.id, monthly_cap_micros=500_000)
    inspect(superuser_client, tenant_a)
    monthly = bar(page(superuser_client, BUDGETS), "monthly")
    assert "over the cap by</dt><dd>$0.30</dd>" in monthly
    assert 'class="budget-bar-spent" style="width:100.00%"' in monthly  # the bar spans the spend
    assert 'class="budget-bar-cap" style="left:62.50%"' in monthly


SEGMENT = re.compile(
    r'<rect [^>]*data-day="([\d-]+)" data-model="([^"]+)" data-micros="(\d+)"><title>([^<]*)</title>'
)


def test_the_daily_chart_shows_each_days_spend_by_model(superuser_client, tenant_a, tenant_b):
    month = current_utc_month()
    first_day = datetime.datetime(month.year, month.month, 1, 23, 59, 59, tzinfo=datetime.UTC)
    record_route_call(tenant_a, model="test-small", cost_micros=300_000, request_id="on-the-first")
    record_route_call(tenant_a, model="test-large", cost_micros=500_000, request_id="today-large")
    record_route_call(tenant_a, model="test-small", cost_micros=20_000, request_id="today-small")
    record_route_call(tenant_a, model="test-small", cost_micros=9_000_000, request_id="last-month")
    record_route_call(tenant_b, model="test-medium", cost_micros=70_000, request_id="b-call")
    backdate_call(tenant_a, "on-the-first", first_day)
    backdate_call(tenant_a, "last-month", first_day - datetime.timedelta(days=1))
    with tenant_context(tenant_a.id):
        today = LLMApiCall.objects.get(request_id="today-large").created_at.astimezone(datetime.UTC).date()
        spend = daily_spend_by_model(month_start=month)
    expected: dict[datetime.date, dict[str, int]] = {}  # one day only when run on the 1st
    for day, model, micros in (
        (first_day.date(), "test-small", 300_000),
        (today, "test-large", 500_000),
        (today, "test-small", 20_000),
    ):
        expected.setdefault(day, {})[model] = expected.get(day, {}).get(model, 0) + micros
    assert spend == expected  # last month's call and tenant B's are not in it

    inspect(superuser_client, tenant_a)
    for url in (BUDGETS, "/admin/llm/llmmonthlycost/"):
        body = page(superuser_client, url)
        svg = re.search(r'<svg class="daily-spend-chart".*?</svg>', body, re.S).group(0)
        segments = {(day, model): int(micros) for day, model, micros, _ in SEGMENT.findall(svg)}
        assert segments == {
            (day.isoformat(), model): micros
            for day, models in expected.items()
            for model, micros in models.items()
        }
        assert f"{today:%Y-%m-%d} test-large: $0.50" in svg  # each segment's tooltip
        assert "test-medium" not in body  # tenant B's model
        legend = re.search(r'<ul class="daily-spend-legend">.*?</ul>', body, re.S).group(0)
        assert legend.index("test-large") < legend.index("test-small")  # the month's biggest first
        assert "$0.32" in legend and "$0.50" in legend
        assert f"{month:%B %Y} (UTC days): <strong>$0.82</strong>" in body
