"""Budgets: caps that no number of concurrent calls can overshoot, reservations that are never
taken twice nor lost, a decision for every admission, and the failures other cost trackers
had (../shared/COST-CONTROL-FAILURES.md), each with the test that would catch it here.

Calls go through the real services as the runtime role, on the test models (1 µUSD per
output token, nothing else): a call's estimate and its actual cost are both exactly its
output tokens, so a cap that fits K calls admits exactly K.
"""

import datetime
import json
import threading
import time
import uuid

import pytest
from django.core.management import CommandError, call_command
from django.db import connections
from django.db.models.functions import Now
from django.test import Client
from kombu import Connection

from llm import services
from llm.models import (
    Budget,
    BudgetDecision,
    BudgetReservation,
    BudgetState,
    LLMApiCall,
    ReservationStatus,
)
from llm.payloads import LLMTaskPayload
from llm.services import BudgetExceeded, budgets, route_request, set_budget
from llm.services.budgets import ConcurrentAdmission, month_start, period_end
from llm.services.prices import PriceToAdd, add_price_period
from llm.tests.factories import payload_data
from llm.tests.workers import REDIS_ONLY, broker_url, send, wait_for_calls
from skeldir.tenancy import tenant_context

pytestmark = pytest.mark.django_db(transaction=True)

COST = 1_000  # µUSD per call in these tests


def payload(tenant, request_id: str | None = None, *, cost: int = COST, model: str = "test-small", **extra):
    prompt = {"model": model, "output_tokens": cost, **extra}
    return LLMTaskPayload.parse(
        payload_data(tenant.id, prompt=prompt, request_id=request_id or uuid.uuid4().hex)
    )


def month_state(tenant, period: str = "month") -> BudgetState:
    with tenant_context(tenant.id):
        return BudgetState.objects.filter(period=period).order_by("-period_start").first()


def calls_total(tenant) -> tuple[int, int]:
    with tenant_context(tenant.id):
        costs = list(LLMApiCall.objects.values_list("cost_micros", flat=True))
    return len(costs), sum(costs)


def decisions(tenant) -> list[str]:
    with tenant_context(tenant.id):
        return list(BudgetDecision.objects.order_by("created_at").values_list("decision", flat=True))


def run_at_once(count: int, work) -> list:
    """`work(i)` in `count` threads released together, each on its own connection."""
    start, results = threading.Barrier(count, timeout=30), [None] * count

    def run(i):
        try:
            start.wait()
            results[i] = work(i)
        except Exception as error:  # collected: BudgetExceeded is an expected outcome
            results[i] = error
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def test_no_budget_means_unlimited_and_decides_nothing(tenant_a):
    for _ in range(3):
        route_request(payload(tenant_a))
    assert calls_total(tenant_a) == (3, 3 * COST)
    assert decisions(tenant_a) == []


def test_a_blocked_call_writes_its_decision_and_nothing_else(tenant_a):
    set_budget(tenant_id=tenant_a.id, monthly_cap_micros=COST + 500)
    route_request(payload(tenant_a))
    with pytest.raises(BudgetExceeded) as blocked:
        route_request(payload(tenant_a, "over-the-cap"))
    error = blocked.value
    assert (error.budget, error.cap_micros, error.remaining_micros) == ("monthly", COST + 500, 500)
    assert error.resets_at == period_end("month", month_start(datetime.datetime.now(datetime.UTC)))
    assert "monthly LLM budget would be exceeded" in str(error)
    assert decisions(tenant_a) == ["ALLOW", "BLOCK"]
    with tenant_context(tenant_a.id):
        block = BudgetDecision.objects.get(decision="BLOCK")
        assert not BudgetReservation.objects.filter(request_id="over-the-cap").exists()
        assert not LLMApiCall.objects.filter(request_id="over-the-cap").exists()
    assert (block.request_id, block.estimate_micros, block.remaining_micros, block.resolved_model) == (
        "over-the-cap",
        COST,
        500,
        None,
    )
    state = month_state(tenant_a)
    assert (state.spent_micros, state.reserved_micros) == (COST, 0)


def test_one_statement_admission_records_what_the_step_by_step_one_does(tenant_a, monkeypatch):
    """The month's first call is admitted step by step (its state row is created); the next
    ones by one statement (sql.ADMISSION_SQL). Both leave the same decision and reservation."""
    cap = 10 * COST
    set_budget(tenant_id=tenant_a.id, monthly_cap_micros=cap)
    route_request(payload(tenant_a, "first"))

    def step_by_step(**_):
        raise AssertionError("admitted step by step, not by the one statement")

    monkeypatch.setattr(budgets, "_try_reserve", step_by_step)
    for request_id in ("second", "third"):
        route_request(payload(tenant_a, request_id))
    monkeypatch.undo()
    with tenant_context(tenant_a.id):
        rows = [
            (
                d.request_id,
                d.requested_model,
                d.resolved_model,
                d.estimate_micros,
                d.budget,
                d.cap_micros,
                d.remaining_micros,
                d.decision,
                d.reason,
            )
            for d in BudgetDecision.objects.order_by("created_at")
        ]
        reservations = {
            r.request_id: (r.model, r.estimate_micros, r.actual_micros, r.status, r.month_start, r.hour_start)
            for r in BudgetReservation.objects.all()
        }
    assert rows == [
        (request_id, "test-small", "test-small", COST, "month", cap, cap - k * COST, "ALLOW", "within budget")
        for k, request_id in enumerate(("first", "second", "third"))
    ]
    this_month = month_start(datetime.datetime.now(datetime.UTC))
    assert reservations == {
        request_id: ("test-small", COST, COST, ReservationStatus.SETTLED, this_month, None)
        for request_id in ("first", "second", "third")
    }
    state = month_state(tenant_a)
    assert (state.spent_micros, state.reserved_micros) == (3 * COST, 0)


def test_two_deliveries_admitted_at_once_by_the_one_statement_leave_one_reservation(tenant_a):
    """Both deliveries of one call read "no reservation yet" in their snapshots while a third
    transaction holds the month's state row, and both reserve once it is released: the one
    whose reservation row comes second rolls back, its reservation and decision with it."""
    set_budget(tenant_id=tenant_a.id, monthly_cap_micros=10 * COST)
    route_request(payload(tenant_a, "first"))  # the month's state row exists: the one statement
    usage = services.workers.stub_usage(payload(tenant_a, "twice"), "route")[0]
    locked, release = threading.Event(), threading.Event()

    def hold_the_state_row():
        try:
            with tenant_context(tenant_a.id), connections["default"].cursor() as cursor:
                cursor.execute("SELECT id FROM llm_budget_state WHERE period = 'month' FOR UPDATE")
                locked.set()
                release.wait(30)
        finally:
            connections.close_all()

    holder = threading.Thread(target=hold_the_state_row)
    holder.start()
    assert locked.wait(10)
    admit = lambda i: budgets.admit_call(  # noqa: E731
        tenant_id=tenant_a.id, request_id="twice", endpoint="route", usage=usage
    )
    results = []
    runner = threading.Thread(target=lambda: results.extend(run_at_once(2, admit)))
    runner.start()
    time.sleep(1)  # both statements wait on the state row, past their snapshot
    release.set()
    holder.join()
    runner.join()
    assert sorted(type(r).__name__ for r in results) == ["Admission", ConcurrentAdmission.__name__]
    with tenant_context(tenant_a.id):
        assert BudgetReservation.objects.filter(request_id="twice").count() == 1
        assert BudgetDecision.objects.filter(request_id="twice").count() == 1
    assert month_state(tenant_a).reserved_micros == COST  # one estimate held, not two


def _app_clock_ahead_of_the_database(monkeypatch, seconds: int) -> None:
    real = datetime.datetime

    class Ahead(real):
        @classmethod
        def now(cls, tz=None):
            return real.now(tz) + datetime.timedelta(seconds=seconds)

    monkeypatch.setattr(datetime, "datetime", Ahead)


def _price_falling_in(seconds: int) -> None:
    """Model "falling": 1 µUSD per output token, half that from `seconds` from now."""
    epoch = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)
    now = datetime.datetime.now(datetime.UTC)
    add_price_period(price=PriceToAdd("falling", "test", 0, 0, 1_000_000, valid_from=epoch))
    cut = PriceToAdd("falling", "test", 0, 0, 500_000, valid_from=now + datetime.timedelta(seconds=seconds))
    add_price_period(price=cut, now=now - datetime.timedelta(hours=1))  # scheduled long ago


def test_an_app_clock_ahead_of_the_database_cannot_overshoot_before_a_price_cut(tenant_a, monkeypatch):
    """Review: estimates are priced at the database's time, the clock calls are recorded by.
    On the app host's clock, 60 s ahead, the cut 30 s away would already be in force: the
    call would be estimated at half its cost, admitted, and recorded past the cap."""
    _price_falling_in(30)
    set_budget(tenant_id=tenant_a.id, monthly_cap_micros=1_200)
    route_request(payload(tenant_a, "first", cost=500))
    _app_clock_ahead_of_the_database(monkeypatch, 60)
    with pytest.raises(BudgetExceeded):  # 1,000 µUSD at the price in force, 700 left
        route_request(payload(tenant_a, "second", model="falling"))
    monkeypatch.undo()
    state = month_state(tenant_a)
    assert (state.spent_micros, state.reserved_micros) == (500, 0)


def test_a_redelivery_reprices_at_the_time_its_reservation_was_priced(tenant_a, monkeypatch):
    """Admitted by the API with the app's clock 5 minutes ahead, the call is found by its
    worker (another clock) and repriced at the reservation's own time: not a mismatch."""
    _price_falling_in(30)
    set_budget(tenant_id=tenant_a.id, monthly_cap_micros=10 * COST)
    route_request(payload(tenant_a, "first", cost=500))
    call = payload(tenant_a, "admitted-by-the-api", model="falling")
    usage = services.workers.stub_usage(call, "route")[0]
    _app_clock_ahead_of_the_database(monkeypatch, 300)
    budgets.admit_call(tenant_id=tenant_a.id, request_id="admitted-by-the-api", endpoint="route", usage=usage)
    monkeypatch.undo()
    route_request(call)
    state = month_state(tenant_a)
    assert (state.spent_micros, state.reserved_micros) == (1_500, 0)


def test_burst_of_64_concurrent_calls_never_overshoots_the_cap(tenant_a):
    """Failure 1 (check-then-record race): 64 calls at once against a cap that fits 10."""
    cap = 10 * COST + COST // 2
    set_budget(tenant_id=tenant_a.id, monthly_cap_micros=cap)
    results = run_at_once(64, lambda i: route_request(payload(tenant_a, f"burst-{i}")))

    unexpected = [r for r in results if isinstance(r, Exception) and not isinstance(r, BudgetExceeded)]
    assert not unexpected, unexpected[:3]
    admitted = sum(1 for r in results if not isinstance(r, Exception))
    blocked = sum(1 for r in results if isinstance(r, BudgetExceeded))
    state = month_state(tenant_a)
    print(f"burst: admitted={admitted} blocked={blocked} spent={state.spent_micros} cap={cap}")
    assert (admitted, blocked) == (10, 54)
    assert state.spent_micros == 10 * COST <= cap and state.reserved_micros == 0
    assert calls_total(tenant_a) == (10, state.spent_micros)
    assert sorted(decisions(tenant_a)) == ["ALLOW"] * 10 + ["BLOCK"] * 54  # one per attempt


def test_burst_of_64_concurrent_api_posts_answers_202_or_429_and_never_overshoots(
    tenant_a, tenant_factory, run_tasks_eagerly
):
    route_cost = 16  # a route call's 16 output tokens on test-small: the API cannot choose usage
    cap = 10 * route_cost + route_cost // 2
    set_budget(tenant_id=tenant_a.id, monthly_cap_micros=cap)
    key = tenant_factory.api_keys[tenant_a.id]
    body = json.dumps({"prompt": {"model": "test-small", "question": "x" * 3}})
    watching, worst = threading.Event(), []

    def watch():  # spent + reserved, sampled while the burst runs
        while not watching.is_set():
            state = month_state(tenant_a)
            if state is not None:
                worst.append(state.spent_micros + state.reserved_micros)
        connections.close_all()

    def post(i):
        client = Client(HTTP_AUTHORIZATION=f"Bearer {key}")
        return client.post(
            "/api/llm/route", body, content_type="application/json", headers={"Idempotency-Key": f"api-{i}"}
        )

    watcher = threading.Thread(target=watch)
    watcher.start()
    responses = run_at_once(64, post)
    watching.set()
    watcher.join()

    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {202, 429}, [r.content for r in responses if r.status_code not in (202, 429)][:3]
    accepted = statuses.count(202)
    assert accepted == 10
    assert max(worst, default=0) <= cap
    with tenant_context(tenant_a.id):
        reservations = set(BudgetReservation.objects.values_list("request_id", flat=True))
    assert reservations == {f"api-{i}" for i, status in enumerate(statuses) if status == 202}
    state = month_state(tenant_a)
    count, spent = calls_total(tenant_a)
    assert (count, spent, state.reserved_micros) == (accepted, state.spent_micros, 0)
    assert state.spent_micros <= cap
    refused = next(r for r in responses if r.status_code == 429).json()
    assert (refused["budget"], refused["remaining_micros"]) == ("monthly", route_cost // 2)
    assert next(r for r in responses if r.status_code == 429)["Retry-After"].isdigit()


def test_an_hourly_cap_blocks_with_its_own_name_and_reset(tenant_a):
    set_budget(tenant_id=tenant_a.id, monthly_cap_micros=100 * COST, hourly_cap_micros=2 * COST + 1)
    route_request(payload(tenant_a))
    route_request(payload(tenant_a))
    with pytest.raises(BudgetExceeded) as blocked:
        route_request(payload(tenant_a))
    assert (blocked.value.budget, blocked.value.remaining_micros) == ("hourly", 1)
    assert blocked.value.resets_at.minute == 0 and blocked.value.resets_at > datetime.datetime.now(
        datetime.UTC
    )
    assert month_state(tenant_a, "hour").spent_micros == month_state(tenant_a).spent_micros == 2 * COST


def test_at_the_cap_a_fallback_budget_uses_the_cheapest_fitting_model(tenant_a):
    epoch = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)
    for model, per_token in (("fallback-mid", 500_000), ("fallback-cheap", 100_000)):
        add_price_period(price=PriceToAdd(model, "test", 0, 0, per_token, valid_from=epoch))
    set_budget(
        tenant_id=tenant_a.id,
        monthly_cap_micros=COST + 200,
        on_exceed="fallback",
        fallback_models=["fallback-mid", "fallback-cheap"],
    )
    route_request(payload(tenant_a))  # 1,000 of 1,200
    result = route_request(payload(tenant_a, "falls-back"))  # mid would cost 500: only cheap (100) fits
    assert (result.model, result.cost_micros) == ("fallback-cheap", 100)
    with tenant_context(tenant_a.id):
        decision = BudgetDecision.objects.get(request_id="falls-back")
    assert (decision.decision, decision.requested_model, decision.resolved_model) == (
        "FALLBACK",
        "test-small",
        "fallback-cheap",
    )
    assert "fallback-cheap fits" in decision.reason
    with pytest.raises(BudgetExceeded):
        route_request(payload(tenant_a, "nothing-fits", cost=2 * COST))  # 100 left; even cheap costs 200
    assert month_state(tenant_a).spent_micros == COST + 100
    assert decisions(tenant_a) == ["ALLOW", "FALLBACK", "BLOCK"]


def test_a_redelivered_call_reuses_its_reservation_and_is_charged_once(tenant_a):
    """Failure 4: a retry or re-read charged again."""
    set_budget(tenant_id=tenant_a.id, monthly_cap_micros=10 * COST)
    first = route_request(payload(tenant_a, "same-request"))
    again = route_request(payload(tenant_a, "same-request"))
    assert (first.recorded, again.recorded) == (True, False)
    with tenant_context(tenant_a.id):
        assert BudgetReservation.objects.count() == 1
    assert decisions(tenant_a) == ["ALLOW"]
    state = month_state(tenant_a)
    assert (state.spent_micros, state.reserved_micros) == (COST, 0)


def test_a_failed_call_releases_its_reservation(tenant_a):
    set_budget(tenant_id=tenant_a.id, monthly_cap_micros=10 * COST)
    with pytest.raises(services.ForcedFailure):
        route_request(payload(tenant_a, "fails"), force_failure=True)
    with tenant_context(tenant_a.id):
        assert BudgetReservation.objects.get(request_id="fails").status == ReservationStatus.RELEASED
    state = month_state(tenant_a)
    assert (state.spent_micros, state.reserved_micros) == (0, 0)
    assert calls_total(tenant_a) == (0, 0)


def expire_reservations(tenant) -> None:
    with tenant_context(tenant.id):
        BudgetReservation.objects.update(lease_expires_at=Now() - datetime.timedelta(seconds=1))


def test_the_lease_sweep_releases_a_dead_workers_reservation_and_a_late_call_is_counted_once(tenant_a):
    set_budget(tenant_id=tenant_a.id, monthly_cap_micros=10 * COST)
    usage = services.workers.stub_usage(payload(tenant_a, "dies"), "route")[0]
    services.admit_call(tenant_id=tenant_a.id, request_id="dies", endpoint="route", usage=usage)
    assert month_state(tenant_a).reserved_micros == COST  # the worker died here
    expire_reservations(tenant_a)
    assert services.sweep_expired_reservations() == {"released": 1}
    assert month_state(tenant_a).reserved_micros == 0
    route_request(payload(tenant_a, "dies"))  # the message redelivered: admitted again, once
    state = month_state(tenant_a)
    assert (state.spent_micros, state.reserved_micros) == (COST, 0)
    assert calls_total(tenant_a) == (1, COST)


def test_a_call_recorded_before_its_tenant_had_a_budget_is_not_charged_again(tenant_a, api_client):
    """Review F4: the same key recorded unbudgeted, then repeated once a budget exists."""
    route_request(payload(tenant_a, "before-the-budget"))
    set_budget(tenant_id=tenant_a.id, monthly_cap_micros=10 * COST)
    again = route_request(payload(tenant_a, "before-the-budget"))
    assert again.recorded is False
    state = month_state(tenant_a)
    assert (state.spent_micros, state.reserved_micros) == (COST, 0) == (calls_total(tenant_a)[1], 0)
    with tenant_context(tenant_a.id):
        assert BudgetReservation.objects.get().status == ReservationStatus.RELEASED


def test_a_request_id_reused_for_a_bigger_call_is_refused(tenant_a):
    """Review F1: one key, a small call admitted, then a bigger one sent under the same key."""
    set_budget(tenant_id=tenant_a.id, monthly_cap_micros=2 * COST)
    small = payload(tenant_a, "one-key")
    usage = services.workers.stub_usage(small, "route")[0]
    services.admit_call(tenant_id=tenant_a.id, request_id="one-key", endpoint="route", usage=usage)
    with pytest.raises(services.ReservationMismatch, match="admitted for a smaller route call"):
        route_request(payload(tenant_a, "one-key", cost=200 * COST))
    route_request(small)  # the call admitted is recorded, once
    state = month_state(tenant_a)
    assert (state.spent_micros, state.reserved_micros) == (COST, 0)


def test_changing_a_budget_moves_the_cap_of_the_month_in_progress(tenant_a):
    """Review F9: a budget set in an earlier period, changed now."""
    set_budget(tenant_id=tenant_a.id, monthly_cap_micros=100 * COST)
    route_request(payload(tenant_a))
    with tenant_context(tenant_a.id, using="owner"), connections["owner"].cursor() as cursor:
        cursor.execute("UPDATE llm_budgets SET updated_at = updated_at - interval '40 days'")
    set_budget(tenant_id=tenant_a.id, monthly_cap_micros=COST)
    assert month_state(tenant_a).cap_micros == COST
    with pytest.raises(BudgetExceeded):
        route_request(payload(tenant_a))


def test_a_budget_removed_and_set_again_counts_what_was_spent_meanwhile(tenant_a):
    """Review F2."""
    set_budget(tenant_id=tenant_a.id, monthly_cap_micros=4 * COST)
    route_request(payload(tenant_a))
    services.remove_budget(tenant_id=tenant_a.id)
    route_request(payload(tenant_a, cost=3 * COST))  # unbudgeted spend
    set_budget(tenant_id=tenant_a.id, monthly_cap_micros=4 * COST)
    assert month_state(tenant_a).spent_micros == 4 * COST
    with pytest.raises(BudgetExceeded):
        route_request(payload(tenant_a))


def test_a_call_admitted_before_a_period_ends_is_charged_to_that_period(tenant_a):
    """Review F5: reserved in one hour, recorded in the next, it counts where it was admitted:
    the next hour's cap admits its own calls in full."""
    set_budget(tenant_id=tenant_a.id, monthly_cap_micros=100 * COST, hourly_cap_micros=2 * COST)
    p = payload(tenant_a, "straddles")
    usage = services.workers.stub_usage(p, "route")[0]
    services.admit_call(tenant_id=tenant_a.id, request_id="straddles", endpoint="route", usage=usage)
    # The admission's hour becomes the previous one (as if it was admitted at hh:59:59).
    with tenant_context(tenant_a.id, using="owner"), connections["owner"].cursor() as cursor:
        cursor.execute(
            "UPDATE llm_budget_state SET period_start = period_start - interval '1 hour'"
            " WHERE period = 'hour'"
        )
        cursor.execute("UPDATE llm_budget_reservations SET hour_start = hour_start - interval '1 hour'")
    route_request(p)  # recorded now, in the next hour
    with tenant_context(tenant_a.id):
        hours = dict(BudgetState.objects.filter(period="hour").values_list("period_start", "spent_micros"))
    assert sorted(hours.values()) == [COST]  # charged to the hour that admitted it
    route_request(payload(tenant_a))
    route_request(payload(tenant_a))  # this hour's own cap: two calls
    with pytest.raises(BudgetExceeded):
        route_request(payload(tenant_a))
    with tenant_context(tenant_a.id):
        assert (
            max(BudgetState.objects.filter(period="hour").values_list("spent_micros", flat=True)) == 2 * COST
        )
    call_command("reconcile_llm_costs")  # and the books agree


def test_concurrent_requests_with_one_idempotency_key_get_202_or_409(
    tenant_a, tenant_factory, run_tasks_eagerly
):
    """Review F6: never a 500."""
    set_budget(tenant_id=tenant_a.id, monthly_cap_micros=10 * COST)
    key = tenant_factory.api_keys[tenant_a.id]
    body = json.dumps({"prompt": {"model": "test-small", "q": 1}})

    def post(i):
        client = Client(HTTP_AUTHORIZATION=f"Bearer {key}")
        return client.post(
            "/api/llm/route", body, content_type="application/json", headers={"Idempotency-Key": "same"}
        )

    statuses = {r.status_code for r in run_at_once(16, post)}
    assert statuses <= {202, 409} and 202 in statuses
    state = month_state(tenant_a)
    assert (state.reserved_micros, calls_total(tenant_a)[0]) == (0, 1)


def test_a_new_month_starts_from_nothing_and_keeps_last_months_history(tenant_a):
    """Failure 7: resets that never happen, or "monthly" meaning 30 days."""
    set_budget(tenant_id=tenant_a.id, monthly_cap_micros=2 * COST)
    now = datetime.datetime.now(datetime.UTC)
    last_month = month_start(month_start(now) - datetime.timedelta(days=1))
    with tenant_context(tenant_a.id):
        BudgetState.objects.create(
            tenant_id=tenant_a.id,
            period="month",
            period_start=last_month,
            cap_micros=2 * COST,
            spent_micros=2 * COST,
        )
    route_request(payload(tenant_a))  # last month is spent out; this month is not
    with tenant_context(tenant_a.id):
        states = dict(BudgetState.objects.values_list("period_start", "spent_micros"))
    assert states == {last_month: 2 * COST, month_start(now): COST}
    assert month_start(datetime.datetime(2027, 1, 1, 0, 0, 0, tzinfo=datetime.UTC)) == datetime.datetime(
        2027, 1, 1, tzinfo=datetime.UTC
    )  # the first second of a month is in that month
    assert period_end("month", datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC)).month == 1


def test_a_budget_set_mid_month_counts_the_month_so_far(tenant_a):
    route_request(payload(tenant_a, cost=3 * COST))  # unbudgeted spend
    set_budget(tenant_id=tenant_a.id, monthly_cap_micros=4 * COST)
    route_request(payload(tenant_a))
    with pytest.raises(BudgetExceeded):
        route_request(payload(tenant_a))
    assert month_state(tenant_a).spent_micros == 4 * COST


def test_batched_calls_count_in_the_budget_too(tenant_a):
    """Failure 6: a path whose spend escapes the budget."""
    set_budget(tenant_id=tenant_a.id, monthly_cap_micros=10 * COST)
    route_request(payload(tenant_a))  # the month's state exists
    batch = [payload(tenant_a, f"b-{i}") for i in range(3)]
    services.record_stub_calls_batch(payloads=batch, endpoint="route")
    assert month_state(tenant_a).spent_micros == 4 * COST == calls_total(tenant_a)[1]


def test_reconciliation_finds_budget_drift_and_repairs_it_while_calls_go_on(tenant_a):
    """Failure 3: a repair that adds instead of setting (or sets over live updates)."""
    set_budget(tenant_id=tenant_a.id, monthly_cap_micros=1_000 * COST)
    route_request(payload(tenant_a))
    with tenant_context(tenant_a.id, using="owner"), connections["owner"].cursor() as cursor:
        cursor.execute("UPDATE llm_budget_state SET spent_micros = spent_micros + 777, reserved_micros = 5")
    with pytest.raises(CommandError, match="1 budget period"):
        call_command("reconcile_llm_costs")

    results = run_at_once(
        9,
        lambda i: (
            call_command("reconcile_llm_costs", "--fix") if i == 0 else route_request(payload(tenant_a))
        ),
    )
    assert not [r for r in results if isinstance(r, Exception)]
    call_command("reconcile_llm_costs")  # no drift left
    state = month_state(tenant_a)
    assert (state.spent_micros, state.reserved_micros) == (9 * COST, 0) == (calls_total(tenant_a)[1], 0)


def test_set_budget_command_and_removal(tenant_a, capsys):
    call_command(
        "set_budget", "--tenant", tenant_a.name, "--monthly-usd", "2.5", "--hourly-usd", "0.000001",
        "--thresholds", "80,50", "--on-exceed", "fallback", "--fallback-models", "test-medium",
    )  # fmt: skip
    assert "$2.50 a month, $0.000001 an hour; alerts at 50%, 80%" in capsys.readouterr().out
    with tenant_context(tenant_a.id):
        budget = Budget.objects.get()
    assert (budget.monthly_cap_micros, budget.hourly_cap_micros, budget.thresholds) == (
        2_500_000,
        1,
        [50, 80],
    )
    for bad, message in (
        (["--monthly-usd", "-1"], "not a positive amount"),
        (["--monthly-usd", "0.0000001"], "whole micro-dollars"),
        (["--monthly-usd", "1", "--thresholds", "150"], "thresholds"),
        (["--monthly-usd", "1", "--on-exceed", "fallback", "--fallback-models", "nope"], "'nope'"),
    ):
        with pytest.raises(CommandError, match=message):
            call_command("set_budget", "--tenant", tenant_a.name, *bad)
    with tenant_context(tenant_a.id):
        assert Budget.objects.get().monthly_cap_micros == 2_500_000  # nothing written
    call_command("set_budget", "--tenant", tenant_a.name, "--remove")
    with tenant_context(tenant_a.id):
        assert not Budget.objects.exists()
    route_request(payload(tenant_a, cost=5 * COST))  # unlimited again


def test_a_tenant_reads_its_budget_and_cannot_set_it(api_client, tenant_a):
    client = api_client(tenant_a)
    assert client.get("/api/llm/budget").json() == {
        "tenant_id": str(tenant_a.id),
        "limited": False,
        "monthly": None,
        "hourly": None,
        "thresholds": [],
        "thresholds_crossed": [],
        "on_exceed": None,
    }
    set_budget(tenant_id=tenant_a.id, monthly_cap_micros=2 * COST, thresholds=[50, 100])
    route_request(payload(tenant_a))
    body = client.get("/api/llm/budget").json()
    assert body["limited"] is True and body["thresholds_crossed"] == [50]
    monthly = body["monthly"]
    assert (monthly["cap_micros"], monthly["spent_micros"], monthly["reserved_micros"]) == (2 * COST, COST, 0)
    assert (monthly["remaining_micros"], monthly["spent_usd"], monthly["cap_usd"]) == (
        COST,
        "$0.001000",
        "$0.002000",
    )
    for method in ("post", "put", "patch", "delete"):
        response = getattr(client, method)("/api/llm/budget", "{}", content_type="application/json")
        assert response.status_code == 405
    with tenant_context(tenant_a.id):
        assert Budget.objects.get().monthly_cap_micros == 2 * COST


@REDIS_ONLY
def test_burst_through_a_real_worker_with_two_processes_never_overshoots(start_worker, tenant_a):
    """Failure 2 (counters per process): two worker processes share the one counter. (On
    Redis, the production broker; the development transport polls too slowly to race.)"""
    broker = "redis"
    with Connection(broker_url(broker)) as conn:  # messages earlier tests left: not this test's
        conn.default_channel.queue_purge("llm")
    cap = 10 * COST + COST // 2
    set_budget(tenant_id=tenant_a.id, monthly_cap_micros=cap)
    worker = start_worker(broker, concurrency=2)
    for i in range(30):
        send(broker, "route", payload(tenant_a, f"w-{i}"))
    wait_for_calls(tenant_a, 10, timeout=60, worker=worker)
    deadline = time.monotonic() + 60
    while len(decisions(tenant_a)) < 30:  # every task decided, admitted or blocked
        assert time.monotonic() < deadline, worker.output()[-3000:]
        time.sleep(0.2)
    state = month_state(tenant_a)
    assert (state.spent_micros, state.reserved_micros) == (10 * COST, 0)
    assert calls_total(tenant_a) == (10, 10 * COST)
    assert sorted(decisions(tenant_a)) == ["ALLOW"] * 10 + ["BLOCK"] * 20


@REDIS_ONLY
def test_a_worker_killed_between_reserve_and_settle_is_charged_once_after_redelivery(start_worker, tenant_a):
    set_budget(tenant_id=tenant_a.id, monthly_cap_micros=10 * COST)
    options = {"CELERY_VISIBILITY_TIMEOUT": "3", "CELERY_UNACKED_RESTORE_INTERVAL": "1"}
    first = start_worker("redis", concurrency=1, **options)
    slow = payload(tenant_a, "killed-mid-call", sleep_ms=4000)
    task_id = send("redis", "route", slow)
    first.wait_for_log(f"[{task_id}] received", timeout=30)
    deadline = time.monotonic() + 30
    while month_state(tenant_a) is None or month_state(tenant_a).reserved_micros != COST:
        assert time.monotonic() < deadline, first.output()[-3000:]  # reserved, now "calling"
        time.sleep(0.05)
    first.kill()
    assert calls_total(tenant_a) == (0, 0)

    second = start_worker("redis", concurrency=1, **options)
    wait_for_calls(tenant_a, 1, timeout=60, worker=second)
    state = month_state(tenant_a)
    assert (state.spent_micros, state.reserved_micros) == (COST, 0)
    assert calls_total(tenant_a) == (1, COST)
    assert decisions(tenant_a) == ["ALLOW"]  # the redelivery found its reservation
    with tenant_context(tenant_a.id):
        assert BudgetReservation.objects.get().status == ReservationStatus.SETTLED


def test_a_price_rise_scheduled_within_the_lease_is_in_the_estimate(tenant_a, settings):
    """Review F3: a call admitted now may be recorded, and priced, after a scheduled rise."""
    settings.LLM_RESERVATION_LEASE_SECONDS = 2_000
    epoch = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)
    now = datetime.datetime.now(datetime.UTC)
    add_price_period(price=PriceToAdd("rising", "test", 0, 0, 1_000_000, valid_from=epoch))
    rise = PriceToAdd("rising", "test", 0, 0, 3_000_000, valid_from=now + datetime.timedelta(seconds=1_000))
    add_price_period(price=rise, now=now - datetime.timedelta(hours=1))  # scheduled long ago
    set_budget(tenant_id=tenant_a.id, monthly_cap_micros=2 * COST)
    with pytest.raises(BudgetExceeded):  # 1,000 at today's price, 3,000 at the one to come
        route_request(payload(tenant_a, model="rising"))
    with tenant_context(tenant_a.id):
        assert BudgetDecision.objects.get().estimate_micros == 3 * COST
