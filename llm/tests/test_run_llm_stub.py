"""`manage.py run_llm_stub`, the main job, and the README command that runs it."""

import os
import subprocess
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from llm.management.commands.run_llm_stub import DEMO_TENANT_NAME
from llm.models import BudgetOptimizationJob, Investigation, LLMApiCall, LLMMonthlyCost, Tenant
from llm.money import format_micros
from llm.selectors import current_utc_month
from skeldir.tenancy import tenant_context

pytestmark = pytest.mark.django_db(transaction=True)


def run(*args: str) -> str:
    out = StringIO()
    call_command("run_llm_stub", *args, stdout=out)
    return out.getvalue()


def test_runs_every_kind_for_a_named_tenant_and_prints_the_month(tenant_a):
    output = run("--tenant", tenant_a.name, "--count", "2", "--concurrency", "3")
    with tenant_context(tenant_a.id):
        calls = LLMApiCall.objects.count()
        month = LLMMonthlyCost.objects.get(month=current_utc_month())
        jobs = Investigation.objects.count(), BudgetOptimizationJob.objects.count()
    assert (calls, month.total_calls, jobs) == (8, 8, (2, 2))
    assert f"Running 8 stub call(s) for {tenant_a.name}" in output
    assert f"{month.total_calls} calls, {format_micros(month.total_cost_micros)}" in output
    for model, entry in month.model_breakdown.items():
        assert model in output and str(entry["calls"]) in output


def test_creates_the_demo_tenant_when_there_is_none_and_says_so():
    output = run("--kind", "route", "--count", "1")
    tenant = Tenant.objects.get(name=DEMO_TENANT_NAME)
    assert f"created {DEMO_TENANT_NAME} ({tenant.id})" in output
    assert "API key, shown only now: sk_" in output
    assert "created" not in run("--kind", "route", "--count", "1").split("\n")[0]


def test_shows_progress_for_large_counts(tenant_a):
    output = run("--tenant", str(tenant_a.id), "--kind", "route", "--count", "100", "--concurrency", "8")
    assert "100/100 done" in output
    assert "100 calls" in output


def test_forced_failure_records_nothing_and_fails_the_command(tenant_a):
    with pytest.raises(CommandError, match="Some calls failed"):
        run("--tenant", tenant_a.name, "--force-failure", "--count", "1")
    with tenant_context(tenant_a.id):
        assert LLMApiCall.objects.count() == LLMMonthlyCost.objects.count() == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tenant", "No Such Tenant"], "No tenant 'No Such Tenant'"),
        (["--tenant", "00000000-0000-4000-8000-000000000000"], "No tenant"),
        (["--count", "0"], "at least 1"),
        (["--max-cost-cents", "-1"], "must not be negative"),
    ],
)
def test_bad_options_get_a_clear_error_and_write_nothing(args, message):
    with pytest.raises(CommandError, match=message):
        run(*args)
    assert not Tenant.objects.exists()


def test_the_readme_run_command_works_on_a_fresh_embedded_database(tmp_path):
    """`./dev run` with no DATABASE_URL: starts its own PostgreSQL, migrates, runs the job."""
    data_dir = tmp_path / "pgdata"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "CELERY_"))}
    env["EMBEDDED_POSTGRES_DIR"] = str(data_dir)
    base_dir = Path(settings.BASE_DIR)
    try:
        result = subprocess.run(
            ["./dev", "run", "--count", "2"],
            cwd=base_dir,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "created Demo tenant" in result.stdout
        assert "Running 8 stub call(s)" in result.stdout
        assert "8 calls, $" in result.stdout
        assert "stub-large" in result.stdout and "stub-medium" in result.stdout
    finally:
        subprocess.run(
            [str(base_dir / ".venv" / "bin" / "python"), "-m", "skeldir.embedded_database", "stop"],
            cwd=base_dir, env=env, capture_output=True, timeout=60,
        )  # fmt: skip
