"""The price catalogue: every call priced once, at recording, exact to the micro-dollar, by
the price in force at its own time; history never repriced; no free or absurd prices."""

import datetime
import json
import math
import time
import uuid
from fractions import Fraction

import pytest
from django.core.management import CommandError, call_command
from django.db import IntegrityError, connections
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm import prices
from llm.models import LLMApiCall, LLMMonthlyCost, ModelPrice
from llm.money import MAX_TOKEN_PRICE_MICROS, format_micros, micros_to_cents
from llm.payloads import LLMTaskPayload
from llm.prices import NoPriceInForce
from llm.selectors import current_utc_month
from llm.services import record_api_call, record_monthly_costs, route_request
from llm.services.accounting import call_transaction
from llm.services.prices import InvalidPrice, PriceToAdd, add_price_period
from llm.stub_provider import LLMUsage
from llm.tests.factories import payload_data
from skeldir.tenancy import tenant_context

pytestmark = pytest.mark.django_db(transaction=True)

EPOCH = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)


def database_now() -> datetime.datetime:
    with connections["owner"].cursor() as cursor:
        cursor.execute("SELECT statement_timestamp()")
        return cursor.fetchone()[0]


def period(
    model: str, *, valid_from=EPOCH, input=0, cached=0, output=0, fee=0, provider="test"
) -> PriceToAdd:
    return PriceToAdd(
        model=model,
        provider=provider,
        input_micros_per_mtok=input,
        cached_input_micros_per_mtok=cached,
        output_micros_per_mtok=output,
        request_fee_micros=fee,
        valid_from=valid_from,
    )


def new_model(**prices_) -> str:
    name = f"m-{uuid.uuid4().hex[:12]}"
    add_price_period(price=period(name, **prices_))
    return name


def record(tenant, model: str, *, input_tokens=0, cached=0, output=0, request_id=None):
    """One call, the way the workers record it: call row and month in one transaction."""
    usage = LLMUsage(model, input_tokens, output, 10, cached_input_tokens=cached)
    with call_transaction(tenant.id):
        call = record_api_call(
            tenant_id=tenant.id, endpoint="route", request_id=request_id or uuid.uuid4().hex, usage=usage
        )
        if call.created:
            record_monthly_costs(
                tenant_id=tenant.id,
                month=call.month,
                model_label=model,
                cost_micros=call.cost_micros,
                calls=1,
            )
    return call


def month_row(tenant) -> LLMMonthlyCost:
    with tenant_context(tenant.id):
        return LLMMonthlyCost.objects.get(month=current_utc_month())


def test_a_call_is_priced_once_exactly_with_cached_tokens_at_the_cached_price(tenant_a):
    model = new_model(input=150_000, cached=75_000, output=600_000, fee=7)  # $0.15 / $0.075 / $0.60
    call = record(tenant_a, model, input_tokens=1_000, cached=400, output=33)
    # 600 * 0.15 + 400 * 0.075 + 33 * 0.60 µUSD = 90 + 30 + 19.8 -> 140 (half up), + the 7 fee.
    assert call.cost_micros == 147
    assert call.cost_cents == 0  # 0.0147 cents
    with tenant_context(tenant_a.id):
        row = LLMApiCall.objects.get(id=call.id)
    assert (row.cost_micros, row.cost_cents, row.cached_input_tokens) == (147, 0, 400)
    assert row.price_id == ModelPrice.objects.get(model=model).id


def test_half_a_micro_dollar_rounds_up_once_per_call(tenant_a):
    model = new_model(output=500_000)  # half a µUSD per output token
    assert [record(tenant_a, model, output=n).cost_micros for n in (1, 2, 3)] == [1, 1, 2]
    assert month_row(tenant_a).total_cost_micros == 4


def test_a_price_change_mid_month_never_reprices_earlier_calls(tenant_a, settings):
    settings.LLM_PRICE_CACHE_SECONDS = settings.LLM_RESERVATION_LEASE_SECONDS = 0  # no lead time here
    model = new_model(output=1_000_000)
    before = [record(tenant_a, model, output=n) for n in (10, 20)]
    change_at = database_now() + datetime.timedelta(seconds=1.5)
    add_price_period(price=period(model, valid_from=change_at, output=3_000_000))
    time.sleep(max(0.0, (change_at - database_now()).total_seconds()) + 0.05)
    after = [record(tenant_a, model, output=n) for n in (10, 20)]

    old, new = ModelPrice.objects.filter(model=model).order_by("valid_from")
    assert old.valid_to == new.valid_from == change_at
    assert [(c.price_id, c.cost_micros) for c in before] == [(old.id, 10), (old.id, 20)]
    assert [(c.price_id, c.cost_micros) for c in after] == [(new.id, 30), (new.id, 60)]
    with tenant_context(tenant_a.id):
        stored = dict(LLMApiCall.objects.filter(model=model).values_list("id", "cost_micros"))
    assert stored == {c.id: c.cost_micros for c in before + after}  # history unchanged
    month = month_row(tenant_a)
    assert month.total_cost_micros == 120 == sum(stored.values())
    assert month.model_breakdown[model] == {"calls": 4, "cost_micros": 120, "cost_cents": 0}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    input_price=st.integers(0, MAX_TOKEN_PRICE_MICROS),
    cached_share=st.fractions(0, 1),
    output_price=st.integers(0, MAX_TOKEN_PRICE_MICROS),
    fee=st.integers(0, 10_000),
    calls=st.lists(
        st.tuples(st.integers(0, 2_000_000), st.fractions(0, 1), st.integers(0, 200_000)),
        min_size=1,
        max_size=6,
    ),
)
def test_the_months_micro_dollars_are_the_exact_sum_of_its_calls(
    tenant_a, input_price, cached_share, output_price, fee, calls
):
    cached_price = int(input_price * cached_share)
    model = new_model(input=input_price, cached=cached_price, output=output_price, fee=fee)
    price = prices.price_in_force(model)
    with tenant_context(tenant_a.id):
        before = LLMMonthlyCost.objects.filter(month=current_utc_month()).values_list(
            "total_cost_micros", flat=True
        )
        before = before[0] if before else 0
    expected = 0
    for input_tokens, cached_fraction, output_tokens in calls:
        cached = int(input_tokens * cached_fraction)
        call = record(tenant_a, model, input_tokens=input_tokens, cached=cached, output=output_tokens)
        exact = Fraction(
            (input_tokens - cached) * input_price + cached * cached_price + output_tokens * output_price,
            10**6,
        )
        assert call.cost_micros == fee + math.floor(exact + Fraction(1, 2))  # half up, once
        assert call.cost_micros == prices.call_cost_micros(
            price=price, input_tokens=input_tokens, cached_input_tokens=cached, output_tokens=output_tokens
        )
        expected += call.cost_micros
    month = month_row(tenant_a)
    assert month.total_cost_micros - before == expected
    assert month.model_breakdown[model]["cost_micros"] == expected
    assert month.total_cost_cents == micros_to_cents(month.total_cost_micros)


def test_an_unknown_model_or_one_without_a_price_in_force_is_an_error_and_writes_nothing(tenant_a):
    with pytest.raises(NoPriceInForce, match="Unknown model 'no-such-model'"):
        route_request(LLMTaskPayload.parse(payload_data(tenant_a.id, prompt={"model": "no-such-model"})))
    future = f"m-{uuid.uuid4().hex[:8]}"
    add_price_period(price=period(future, valid_from=database_now() + datetime.timedelta(days=1), output=1))
    with pytest.raises(NoPriceInForce, match="no price in force"):
        route_request(LLMTaskPayload.parse(payload_data(tenant_a.id, prompt={"model": future})))
    # The database decides at recording, whatever a process's cache believes.
    with pytest.raises(NoPriceInForce, match="no price in force"):
        record(tenant_a, future, output=1)
    with tenant_context(tenant_a.id):
        assert not LLMApiCall.objects.exists()
        assert not LLMMonthlyCost.objects.exists()


@pytest.mark.parametrize(
    ("changes", "constraint"),
    [
        ({"output_micros_per_mtok": -1}, "llm_model_prices_output_micros_per_mtok_in_range"),
        (
            {"output_micros_per_mtok": MAX_TOKEN_PRICE_MICROS + 1},
            "llm_model_prices_output_micros_per_mtok_in_range",
        ),
        ({"request_fee_micros": 10_000_001}, "llm_model_prices_request_fee_micros_in_range"),
        (
            {"cached_input_micros_per_mtok": 2, "input_micros_per_mtok": 1},
            "llm_model_prices_cached_not_above_input",
        ),
        ({"valid_to": EPOCH}, "llm_model_prices_period_not_empty"),
        ({"model": "has space"}, "llm_model_prices_model_is_a_name"),
    ],
)
def test_the_database_refuses_absurd_prices_by_name(changes, constraint):
    row = {
        "model": "typo-model",
        "provider": "x",
        "input_micros_per_mtok": 1,
        "cached_input_micros_per_mtok": 0,
        "output_micros_per_mtok": 1,
        "request_fee_micros": 0,
        "valid_from": EPOCH,
        "valid_to": None,
        **changes,
    }
    with pytest.raises(IntegrityError, match=constraint):
        ModelPrice.objects.using("owner").create(**row)
    assert not ModelPrice.objects.filter(model=row["model"]).exists()


def test_overlapping_periods_of_one_model_are_refused_by_the_database():
    model = new_model(output=1)
    with pytest.raises(IntegrityError, match="llm_model_prices_no_overlap"):
        ModelPrice.objects.using("owner").create(
            model=model, provider="x", input_micros_per_mtok=0, cached_input_micros_per_mtok=0,
            output_micros_per_mtok=2, valid_from=EPOCH + datetime.timedelta(days=1),
        )  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"input": -5}, "input_micros_per_mtok must be whole µUSD from 0"),
        ({"output": 5_000_000_000}, r"\$1,000.00 per million tokens"),
        ({"cached": 10, "input": 5}, "cached input token cannot cost more"),
        ({"valid_from": datetime.datetime(2026, 1, 1)}, "needs a time zone"),
    ],
)
def test_the_service_refuses_bad_prices_with_a_clear_error(changes, message):
    with pytest.raises(InvalidPrice, match=message):
        add_price_period(price=period("bad-model", **changes))
    assert not ModelPrice.objects.filter(model="bad-model").exists()


def test_history_is_never_rewritten_or_backdated():
    model = new_model(output=1)
    with pytest.raises(InvalidPrice, match="a different price already starts"):
        add_price_period(price=period(model, output=2))
    with pytest.raises(InvalidPrice, match="in the past"):
        add_price_period(
            price=period(model, valid_from=database_now() - datetime.timedelta(hours=1), output=2)
        )
    assert add_price_period(price=period(model, output=1))[1] is False  # identical: already there
    assert ModelPrice.objects.filter(model=model).count() == 1


def test_the_runtime_role_may_only_read_prices():
    with pytest.raises(Exception, match="permission denied"), connections["default"].cursor() as cursor:
        cursor.execute("UPDATE llm_model_prices SET output_micros_per_mtok = 0")


def write_price_file(tmp_path, entries, name="prices.json"):
    path = tmp_path / name
    path.write_text(json.dumps(entries))
    return str(path)


def test_load_prices_is_idempotent_and_closes_the_open_period(tmp_path, capsys):
    start = database_now() + datetime.timedelta(days=1)
    entries = [
        {"model": "loaded-model", "provider": "acme", "input_usd_per_mtok": "0.15",
         "cached_input_usd_per_mtok": "0.075", "output_usd_per_mtok": "0.6", "valid_from": EPOCH.isoformat()},
        {"model": "loaded-model", "provider": "acme", "input_usd_per_mtok": "0.10",
         "cached_input_usd_per_mtok": "0.05", "output_usd_per_mtok": "0.4", "request_fee_usd": "0.000001",
         "valid_from": start.isoformat()},
    ]  # fmt: skip
    path = write_price_file(tmp_path, entries)
    call_command("load_prices", path)
    assert "2 period(s) added, 0 already there" in capsys.readouterr().out
    call_command("load_prices", path)
    assert "0 period(s) added, 2 already there" in capsys.readouterr().out
    first, second = ModelPrice.objects.filter(model="loaded-model").order_by("valid_from")
    assert (
        first.input_micros_per_mtok,
        first.cached_input_micros_per_mtok,
        first.output_micros_per_mtok,
    ) == (
        150_000,
        75_000,
        600_000,
    )
    assert (first.valid_to, second.valid_to, second.request_fee_micros) == (start, None, 1)


def test_load_prices_reads_yaml_too(tmp_path):
    path = tmp_path / "prices.yaml"
    path.write_text(
        "prices:\n  - model: yaml-model\n    provider: acme\n    input_usd_per_mtok: '2.5'\n"
        "    cached_input_usd_per_mtok: 1.25\n    output_usd_per_mtok: 10\n"
        "    valid_from: '2026-01-01T00:00:00Z'\n"
    )
    call_command("load_prices", str(path))
    row = ModelPrice.objects.get(model="yaml-model")
    assert (row.input_micros_per_mtok, row.cached_input_micros_per_mtok, row.output_micros_per_mtok) == (
        2_500_000,
        1_250_000,
        10_000_000,
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"input_usd_per_mtok": "0.0000001"}, "not a whole number of micro-dollars"),
        ({"output_usd_per_mtok": "1e400"}, "out of range"),
        ({"output_usd_per_mtok": "abc"}, "is not a number"),
        ({"valid_from": "yesterday"}, "not an ISO-8601 time"),
        ({"surprise": 1}, "unknown key"),
        ({"input_usd_per_mtok": "5000"}, "per million tokens"),
    ],
)
def test_load_prices_refuses_a_bad_file_and_writes_nothing(tmp_path, change, message):
    entry = {"model": "file-model", "provider": "acme", "input_usd_per_mtok": "1",
             "cached_input_usd_per_mtok": "0", "output_usd_per_mtok": "2",
             "valid_from": "2026-01-01T00:00:00+00:00", **change}  # fmt: skip
    with pytest.raises(CommandError, match=message):
        call_command("load_prices", write_price_file(tmp_path, [entry]))
    assert not ModelPrice.objects.filter(model="file-model").exists()


def test_money_is_shown_with_sub_cent_precision_where_it_matters():
    assert [format_micros(m) for m in (150, 1_500_150, 1_234_560_000, 0, 10_000)] == [
        "$0.000150",
        "$1.500150",
        "$1,234.56",
        "$0.00",
        "$0.01",
    ]


def test_superusers_add_a_price_period_in_the_admin_and_staff_only_read(client):
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission

    users = get_user_model().objects
    client.force_login(users.create_superuser("root", "root@example.com", "a-long-test-password"))
    form = {
        "model": "admin-model", "provider": "acme", "input_micros_per_mtok": "3000000",
        "cached_input_micros_per_mtok": "300000", "output_micros_per_mtok": "15000000",
        "request_fee_micros": "0", "valid_from_0": "2026-01-01", "valid_from_1": "00:00:00",
    }  # fmt: skip
    response = client.post("/admin/llm/modelprice/add/", form)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert ModelPrice.objects.get(model="admin-model").output_micros_per_mtok == 15_000_000
    refused = client.post("/admin/llm/modelprice/add/", {**form, "output_micros_per_mtok": "16000000"})
    assert "a different price already starts" in refused.content.decode()
    listing = client.get("/admin/llm/modelprice/").content.decode()
    assert "$15.00" in listing and "$0.30" in listing

    staff = users.create_user("viewer", "v@example.com", "a-long-test-password", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_modelprice"))
    client.force_login(staff)
    assert client.get("/admin/llm/modelprice/").status_code == 200
    assert client.get("/admin/llm/modelprice/add/").status_code == 403
