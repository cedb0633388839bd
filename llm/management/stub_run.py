"""What `run_llm_stub` runs and how it reports it: the example prompts, the jobs it sends and
their outcomes, and the summary table's formatting."""

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from celery import current_app
from django.db import InterfaceError, OperationalError

from llm.money import format_micros
from llm.payloads import Endpoint
from skeldir.celery_broker import broker_kind

DEMO_TENANT_NAME = "Demo tenant"
QUESTIONS = [
    "Why is Google Ads underperforming this month?",
    "Why did Meta Ads conversions drop after the 12th?",
    "Why is email revenue up while its spend is flat?",
]
# A task failing with one of these (after its retries) means the database stopped answering:
# every further call would fail the same way, so the run stops there.
DATABASE_UNAVAILABLE = (OperationalError, InterfaceError)
WORKER_COMMAND = "./dev worker (celery -A skeldir worker -Q llm)"


def example_prompt(endpoint: Endpoint, index: int) -> dict:
    if endpoint == "route":
        return {"request": f"Which report explains last week's ROAS change? (#{index})"}
    if endpoint == "explanation":
        return {"metric": "roas", "channel": "google_ads", "period": f"week {index % 52 + 1}"}
    if endpoint == "investigation":
        return {"question": QUESTIONS[index % len(QUESTIONS)]}
    return {
        "total_budget_cents": 1_000_000 + 10_000 * (index % 10),
        "channels": {"google_ads": 3.1, "meta_ads": 2.4, "tiktok_ads": 1.2, "email": 0.8},
    }


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]], *, indent: str = "") -> list[str]:
    """Lines of a table whose columns are as wide as their widest cell and two spaces apart
    (so amounts of any size stay apart): the first column left-aligned, the others right."""
    cells = [[str(cell) for cell in row] for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        first, *rest = row
        aligned = [cell.rjust(width) for cell, width in zip(rest, widths[1:], strict=True)]
        lines.append(indent + "  ".join([first.ljust(widths[0]), *aligned]).rstrip())
    return lines


def one_line(error: BaseException) -> str:
    """`Type: first line of the message`, for a one-line error instead of a traceback."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


class WithoutTraceback(logging.Filter):
    """Celery's log line for a task that failed in this process, kept to its one line: the
    report below says what failed (`--traceback` or `--verbosity 2` keep the tracebacks)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info = None
        record.exc_text = None
        return True


@dataclass(frozen=True)
class Job:
    kind: Endpoint
    arguments: dict  # what Task.apply / apply_async take
    request_ids: tuple[str, ...]  # the calls it carries: one, or a batch's


# What became of a job: done (its receipt), failed (its exception), or not done (still
# queued on the broker, or never run because the database had stopped answering).
DONE, FAILED, NOT_DONE = "done", "failed", "not done"


@dataclass(frozen=True)
class Outcome:
    job: Job
    state: str
    value: object = None

    @property
    def calls(self) -> int:
        return len(self.job.request_ids)


def cost_cell(costs: dict | None, kind: str) -> str:
    """A kind's recorded cost for the summary; `unknown` when the database could not be read."""
    if costs is None:
        return "unknown"
    return format_micros(costs[kind].cost_micros if kind in costs else 0)


def run_failure(
    *,
    unavailable: tuple[str, BaseException] | None,
    recorded: int,
    failed: int,
    not_done: int,
    recorded_despite_failure: int,
    costs_read: bool,
    timeout: float,
) -> tuple[str | None, str | None]:
    """What to explain and the one-line error to end with, if the run did not do what was
    asked: (explanation, error), either None."""
    if unavailable is not None:
        what, error = unavailable
        explanation = (
            None
            if costs_read
            else f"Costs and the month to date could not be read: the {what} is unavailable."
        )
        return explanation, (
            f"The {what} became unavailable ({one_line(error)}): {recorded} call(s) were recorded "
            f"before that, {failed} failed and {not_done} were not done."
        )
    if not_done:
        broker = broker_kind(current_app.conf.broker_url)
        return (
            f"\n{not_done} call(s) still queued after {timeout:g}s: no worker on the {broker} broker "
            "finished them.\nThey stay queued and are recorded when a worker takes them: start one "
            f"with {WORKER_COMMAND},\nwith the same CELERY_BROKER_URL as this command (README, "
            '"Broker and workers"), or run without --via-broker.',
            f"{not_done} call(s) still queued on the {broker} broker after {timeout:g}s; "
            "start a worker: ./dev worker",
        )
    if recorded_despite_failure:
        return None, f"{recorded_despite_failure} call(s) were recorded although their task failed: a bug"
    if failed:
        return None, "Some calls failed; see above. Failed calls recorded nothing."
    return None, None


def month_to_date_lines(tenant_name: str, month, row) -> list[str]:
    """The tenant's month so far (its LLMMonthlyCost row, or None): totals and per model."""
    lines = [f"\n{tenant_name}, {month:%Y-%m} to date:"]
    if row is None:
        return [*lines, "  no calls recorded this month"]
    lines.append(f"  {row.total_calls} calls, {format_micros(row.total_cost_micros)}")
    breakdown = [
        [model, entry["calls"], format_micros(entry["cost_micros"])]
        for model, entry in sorted(row.model_breakdown.items())
    ]
    return lines + format_table(["model", "calls", "cost"], breakdown, indent="  ")
