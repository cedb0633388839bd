"""`manage.py run_llm_stub`, the main job, and the README command that runs it."""

import os
import subprocess
import sys
import time
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from llm.management.commands.run_llm_stub import DEMO_TENANT_NAME, format_table
from llm.models import BudgetOptimizationJob, Investigation, LLMApiCall, LLMMonthlyCost, Tenant
from llm.money import format_micros
from llm.selectors import current_utc_month
from llm.tests.factories import create_tenant_row
from llm.tests.proxy import DatabaseProxy
from llm.tests.workers import REDIS_URL, database_url, wait_for_calls
from skeldir.celery import app as celery_app
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


def manage(*args: str, database_url_: str | None = None, timeout: float = 120) -> subprocess.Popen:
    """`manage.py <args>` in a process of its own, as the runtime role on the test database
    (or `database_url_`), with the deployment's JSON logs on stderr."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_OWNER_URL", "LOG_FORMAT")}
    env["DATABASE_URL"] = database_url_ or database_url("default")
    return subprocess.Popen(
        [sys.executable, "manage.py", *args],
        cwd=settings.BASE_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_forced_failure_says_what_happened_in_one_line_per_call_at_most(tenant_a):
    """Every call fails as asked: no traceback per call (Celery's error log of each in-process
    task), a summary that says so, and nothing recorded; the command did what it was asked."""
    process = manage("run_llm_stub", "--tenant", str(tenant_a.id), "--force-failure", "--count", "3")
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stdout + stderr
    assert "12 call(s) failed as asked (--force-failure); nothing was recorded." in stdout
    assert "Traceback" not in stdout + stderr
    assert len(stderr.splitlines()) <= 12, stderr  # at most one log line per call
    with tenant_context(tenant_a.id):
        assert LLMApiCall.objects.count() == LLMMonthlyCost.objects.count() == 0


def test_other_failures_log_one_line_per_call_and_fail_the_command(tenant_a, caplog):
    with pytest.raises(CommandError, match="Some calls failed"):
        run("--tenant", tenant_a.name, "--kind", "explanation", "--count", "2", "--max-cost-cents", "0")
    task_errors = [r for r in caplog.records if r.name == "celery.app.trace" and r.levelname == "ERROR"]
    assert len(task_errors) == 2
    assert all(record.exc_info is None for record in task_errors)  # one line each, no traceback
    with tenant_context(tenant_a.id):
        assert LLMApiCall.objects.count() == 0


def test_the_summary_keeps_columns_apart_for_large_amounts(tenant_a):
    largest = 9_999_999_999_999 * 10_000  # $99,999,999,999.99 in µUSD
    breakdown = {"test-medium": {"calls": 1, "cost_micros": largest, "cost_cents": largest // 10_000}}
    create_tenant_row(
        LLMMonthlyCost,
        tenant=tenant_a,
        month=current_utc_month(),
        total_calls=1,
        total_cost_micros=largest,
        total_cost_cents=largest // 10_000,
        model_breakdown=breakdown,
    )
    output = run("--tenant", tenant_a.name, "--kind", "route", "--count", "1")
    [line] = [line for line in output.splitlines() if line.strip().startswith("test-medium")]
    assert line.split() == ["test-medium", "1", "$99,999,999,999.99"]
    rows = [["budget_optimization", 367, 0, 0, format_micros(largest)], ["route", 1, 0, 0, "$0.02"]]
    lines = format_table(["kind", "recorded", "repeated", "failed", "cost"], rows)
    assert [line.split() for line in lines[1:]] == [[str(cell) for cell in row] for row in rows]
    assert len({len(line) for line in lines}) == 1  # right-aligned columns end together


def test_via_broker_without_a_worker_says_what_is_queued_and_fails_cleanly(tenant_a, start_worker):
    """No worker: a clear message and a CommandError, not Celery's TimeoutError traceback;
    the calls stay queued and a worker started later records them, as the message says."""
    with celery_app.connection_for_write() as conn:  # messages earlier tests left: not ours to wait for
        conn.default_channel.queue_purge("llm")
    out = StringIO()
    with pytest.raises(
        CommandError, match=r"^3 call\(s\) still queued on the .* broker after 1s; start a worker"
    ):
        call_command(
            "run_llm_stub", "--tenant", tenant_a.name, "--kind", "route", "--count", "3",
            "--via-broker", "--timeout", "1", stdout=out,
        )  # fmt: skip
    output = out.getvalue()
    assert "3 call(s) still queued after 1s" in output
    assert "./dev worker" in output and "same CELERY_BROKER_URL" in output
    [route] = [line.split() for line in output.splitlines() if line.startswith("route")]
    # recorded, repeated, blocked, failed, not done, cost
    assert route == ["route", "0", "0", "0", "0", "3", "$0.00"]
    worker = start_worker("redis" if REDIS_URL.startswith("redis") else "postgres")
    wait_for_calls(tenant_a, 3, timeout=60, worker=worker)


def test_when_the_database_goes_away_mid_run_it_prints_the_summary_and_one_line(tenant_a):
    """The database stops answering during an in-process run (its connections drop and new
    ones are refused): the command stops sending calls, prints what was recorded and ends
    with a one-line error, no traceback."""
    proxy = DatabaseProxy()
    process = manage(
        "run_llm_stub", "--tenant", str(tenant_a.id), "--count", "400", "--concurrency", "2",
        database_url_=proxy.url,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while True:
            with tenant_context(tenant_a.id):
                if LLMApiCall.objects.count() >= 5:
                    break
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.05)
        proxy.cut()
        stdout, stderr = process.communicate(timeout=120)
    finally:
        proxy.cut()
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1, stdout + stderr
    assert "Traceback" not in stdout + stderr
    [error] = [line for line in stderr.splitlines() if line.startswith("CommandError")]
    assert error.startswith("CommandError: The database became unavailable (OperationalError: ")
    assert "Costs and the month to date could not be read: the database is unavailable." in stdout
    printed = {
        fields[0]: [int(n) for n in fields[1:6]]
        for fields in (line.split() for line in stdout.splitlines() if line[:1].isalpha())
        if fields[0] in ("route", "explanation", "investigation", "budget_optimization")
    }
    recorded, failed, not_done = (sum(v[i] for v in printed.values()) for i in (0, 3, 4))
    assert recorded + failed + not_done == 1600
    assert not_done > 1000  # it stopped sending calls once the database had gone
    assert f"{recorded} call(s) were recorded before that" in error
    with tenant_context(tenant_a.id):
        actually = LLMApiCall.objects.count()
    # A call whose commit went through just as the connection dropped counts as failed.
    assert recorded <= actually <= recorded + failed


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
