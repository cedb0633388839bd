"""The periodic jobs: monthly-cost reconciliation (task and command) and the stale-job sweeper."""

import datetime

import pytest
from django.core.management import CommandError, call_command
from django.db import connections
from django.db.models.functions import Now

from llm import tasks
from llm.models import Investigation, JobStatus, LLMMonthlyCost
from llm.selectors import current_utc_month
from llm.services import sweep_stale_jobs
from llm.tests.factories import create_tenant_row, record_route_call
from skeldir.tenancy import tenant_context

pytestmark = pytest.mark.django_db(transaction=True)


def record_calls(tenant, costs_by_model: dict[str, list[int]]) -> None:
    for model, costs in costs_by_model.items():
        for cost in costs:
            record_route_call(tenant, model=model, cost_cents=cost)


def inject_drift_as_owner(tenant, sql: str, params=()) -> None:
    """Corrupt the monthly row the way a bad deploy or a manual edit would: as the owner."""
    with tenant_context(tenant.id, using="owner"), connections["owner"].cursor() as cursor:
        cursor.execute(sql, params)
        assert cursor.rowcount == 1


def month_row(tenant) -> LLMMonthlyCost:
    with tenant_context(tenant.id):
        return LLMMonthlyCost.objects.get(month=current_utc_month())


def test_no_drift_is_reported_when_the_books_agree(tenant_a, tenant_b):
    record_calls(tenant_a, {"test-small": [3, 4], "test-large": [50]})
    call_command("reconcile_llm_costs")  # raises on drift
    assert tasks.reconcile_monthly_costs.apply().result["drifts"] == []


def test_reconciliation_finds_drift_injected_by_the_owner_and_fix_repairs_it(tenant_a, tenant_b, capsys):
    record_calls(tenant_a, {"test-small": [3, 4], "test-large": [50]})
    record_calls(tenant_b, {"test-medium": [10]})
    correct_a, correct_b = month_row(tenant_a), month_row(tenant_b)
    inject_drift_as_owner(
        tenant_a,
        "UPDATE llm_monthly_costs SET total_cost_micros = total_cost_micros + 5000000,"
        " total_calls = total_calls - 1,"
        " model_breakdown = jsonb_set(model_breakdown, '{test-small,calls}', '7')",
    )

    with pytest.raises(CommandError, match="1 month\\(s\\) and 0 budget period\\(s\\) drifted"):
        call_command("reconcile_llm_costs")
    output = capsys.readouterr().out
    assert f"drift: tenant {tenant_a.id}" in output
    assert "monthly row says 2 calls / $5.57, the calls add up to 3 / $0.57" in output
    beat_report = tasks.reconcile_monthly_costs.apply().result
    assert beat_report["drifts"] == [
        {"tenant_id": str(tenant_a.id), "month": current_utc_month().isoformat()}
    ]

    call_command("reconcile_llm_costs", "--fix")
    fixed = month_row(tenant_a)
    assert (fixed.total_calls, fixed.total_cost_micros, fixed.model_breakdown) == (
        correct_a.total_calls,
        correct_a.total_cost_micros,
        correct_a.model_breakdown,
    )
    assert month_row(tenant_b).model_breakdown == correct_b.model_breakdown
    call_command("reconcile_llm_costs")


def test_fix_rebuilds_a_deleted_monthly_row_and_removes_a_phantom_model(tenant_a):
    record_calls(tenant_a, {"test-small": [3], "test-medium": [20]})
    correct = month_row(tenant_a)
    inject_drift_as_owner(
        tenant_a,
        "UPDATE llm_monthly_costs SET model_breakdown = model_breakdown"
        ' || \'{"phantom": {"calls": 4, "cost_micros": 90000, "cost_cents": 9}}\'',
    )
    call_command("reconcile_llm_costs", "--fix")
    assert month_row(tenant_a).model_breakdown == correct.model_breakdown

    inject_drift_as_owner(tenant_a, "DELETE FROM llm_monthly_costs")
    call_command("reconcile_llm_costs", "--fix")
    rebuilt = month_row(tenant_a)
    assert (rebuilt.total_calls, rebuilt.total_cost_micros, rebuilt.model_breakdown) == (
        correct.total_calls,
        correct.total_cost_micros,
        correct.model_breakdown,
    )


def test_the_sweeper_fails_stuck_jobs_and_leaves_fresh_ones_alone(tenant_a, tenant_b):
    stuck = create_tenant_row(Investigation, tenant=tenant_a, status=JobStatus.RUNNING)
    never_sent = create_tenant_row(Investigation, tenant=tenant_a, status=JobStatus.PENDING)
    fresh = create_tenant_row(Investigation, tenant=tenant_a, status=JobStatus.RUNNING)
    fresh_pending = create_tenant_row(Investigation, tenant=tenant_a, status=JobStatus.PENDING)
    done = create_tenant_row(Investigation, tenant=tenant_a, status=JobStatus.COMPLETED)
    other_stuck = create_tenant_row(Investigation, tenant=tenant_b, status=JobStatus.RUNNING)
    for tenant, job in ((tenant_a, stuck), (tenant_a, never_sent), (tenant_a, done), (tenant_b, other_stuck)):
        with tenant_context(tenant.id):
            Investigation.objects.filter(id=job.id).update(updated_at=Now() - datetime.timedelta(hours=2))

    swept = sweep_stale_jobs(older_than=datetime.timedelta(minutes=30))

    assert swept == {"investigations": 3, "budget_optimization_jobs": 0}
    with tenant_context(tenant_a.id):
        statuses = dict(Investigation.objects.values_list("id", "status"))
        assert Investigation.objects.get(id=stuck.id).result["error"].startswith("timed out")
    assert statuses == {
        stuck.id: "failed",
        never_sent.id: "failed",
        fresh.id: "running",
        fresh_pending.id: "pending",
        done.id: "completed",
    }
    with tenant_context(tenant_b.id):
        assert Investigation.objects.get(id=other_stuck.id).status == "failed"
    assert tasks.sweep_stale_jobs.apply().result == {"investigations": 0, "budget_optimization_jobs": 0}
