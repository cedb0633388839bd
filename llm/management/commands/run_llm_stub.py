"""Run stub LLM work for a tenant and print what was recorded: in-process by default, through
Celery's own execution path (`Task.apply`), so no broker or worker is needed; `--via-broker`
enqueues the same tasks and waits for a worker. Tasks return ids and status only; the costs
reported are read from the database, inside the tenant, by the request ids sent."""

import logging
import threading
import time
import uuid
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor

from celery import current_app
from celery.exceptions import TimeoutError as ResultTimeout
from django.core.management.base import BaseCommand, CommandError
from django.db import Error as DBError
from django.db import connections

from llm import selectors
from llm.management.stub_run import (
    DATABASE_UNAVAILABLE,
    DEMO_TENANT_NAME,
    DONE,
    FAILED,
    NOT_DONE,
    Job,
    Outcome,
    WithoutTraceback,
    example_prompt,
    format_table,
    month_to_date_lines,
    one_line,
    run_failure,
)
from llm.models import Tenant
from llm.money import format_micros
from llm.payloads import ENDPOINTS, LLMTaskPayload, task_arguments
from llm.services import (
    BATCH_ENDPOINTS,
    AmbiguousTenant,
    BudgetExceeded,
    ForcedFailure,
    UnknownTenant,
    create_tenant,
    find_tenant,
)
from llm.tasks import LLM_TASKS, record_calls_batch
from skeldir.celery_broker import broker_kind
from skeldir.tenancy import tenant_context


class Command(BaseCommand):
    help = "Run stub LLM work for a tenant and print the calls, costs and jobs recorded."

    def add_arguments(self, parser):
        parser.add_argument(
            "--tenant", help="Tenant id or name (default: the demo tenant, created if missing)."
        )
        parser.add_argument("--kind", choices=[*ENDPOINTS, "all"], default="all")
        parser.add_argument("--count", type=int, default=3, help="Calls per kind (default 3).")
        parser.add_argument("--concurrency", type=int, default=4, help="Calls in flight at once (default 4).")
        parser.add_argument("--via-broker", action="store_true", help="Enqueue and wait for a Celery worker.")
        parser.add_argument(
            "--force-failure", action="store_true", help="Make every call fail after its insert."
        )
        parser.add_argument(
            "--max-cost-cents", type=int, default=10_000, help="Cost cap per call (default 10000)."
        )
        parser.add_argument("--timeout", type=float, default=120.0, help="Seconds to wait for a worker.")
        parser.add_argument(
            "--batch-size",
            type=int,
            help="Send route and explanation calls this many to a task (llm.record_calls_batch).",
        )

    # The task each kind runs; --batch-size swaps in the batch task.
    tasks = LLM_TASKS

    def handle(self, *args, **options):
        task_logger = logging.getLogger("skeldir.task")
        trace_logger = logging.getLogger("celery.app.trace")
        level = task_logger.level
        one_line_per_task = WithoutTraceback()
        if options["verbosity"] < 2:
            # Each in-process task logs a line of its own; the report below says it all.
            task_logger.setLevel(logging.WARNING)
            if not options["traceback"]:
                trace_logger.addFilter(one_line_per_task)
        try:
            self._handle(**options)
        except DATABASE_UNAVAILABLE as error:  # before the run (the tenant), or reading its report
            raise CommandError(f"The database is unavailable: {one_line(error)}") from None
        finally:
            task_logger.setLevel(level)
            trace_logger.removeFilter(one_line_per_task)

    def _handle(self, **options):
        if options["count"] < 1 or options["concurrency"] < 1:
            raise CommandError("--count and --concurrency must be at least 1.")
        if options["max_cost_cents"] < 0:
            raise CommandError("--max-cost-cents must not be negative.")
        batch_size = options["batch_size"]
        if batch_size is not None:
            if batch_size < 1:
                raise CommandError("--batch-size must be at least 1.")
            if options["kind"] not in (*BATCH_ENDPOINTS, "all"):
                raise CommandError(
                    f"--batch-size sends {' and '.join(BATCH_ENDPOINTS)} calls; {options['kind']} "
                    "jobs write a job row with each call and are not batched."
                )
            if options["force_failure"]:
                raise CommandError("--force-failure fails single calls; it cannot combine with --batch-size.")
        tenant = self._resolve_tenant(options["tenant"])
        kinds = list(ENDPOINTS) if options["kind"] == "all" else [options["kind"]]
        if batch_size is not None:
            kinds = [kind for kind in kinds if kind in BATCH_ENDPOINTS]
        run_id = uuid.uuid4().hex[:12]
        jobs = []
        for kind in kinds:
            for i in range(options["count"]):
                payload = LLMTaskPayload(
                    tenant_id=tenant.id,
                    correlation_id=f"stub-{run_id}-{kind}-{i}",
                    prompt=example_prompt(kind, i),
                    max_cost_cents=options["max_cost_cents"],
                )
                arguments = task_arguments(kind, payload, force_failure=options["force_failure"])
                jobs.append(Job(kind, arguments, (arguments["args"][0]["request_id"],)))
        broker = broker_kind(current_app.conf.broker_url)
        where = f"via the {broker} broker" if options["via_broker"] else "in-process"
        self.stdout.write(f"Running {len(jobs)} stub call(s) for {tenant.name} ({tenant.id}) {where}...")
        if batch_size is not None:
            jobs = self._batch_jobs(jobs, size=batch_size)
            self.stdout.write(f"  in {len(jobs)} batch task(s) of up to {batch_size} call(s)")
        # What stopped the run early, if anything: (what, error).
        self.unavailable: tuple[str, BaseException] | None = None
        started = time.monotonic()
        if options["via_broker"]:
            outcomes = self._run_via_broker(jobs, timeout=options["timeout"], broker=broker)
        else:
            outcomes = self._run_in_process(jobs, concurrency=options["concurrency"])
        self._report(tenant, outcomes, elapsed=time.monotonic() - started, options=options)

    def _resolve_tenant(self, given: str | None) -> Tenant:
        if given is None:
            tenant = Tenant.objects.filter(name=DEMO_TENANT_NAME).order_by("created_at").first()
            if tenant is None:
                tenant, api_key = create_tenant(name=DEMO_TENANT_NAME)
                self.stdout.write(
                    f"No demo tenant yet: created {tenant.name} ({tenant.id}). "
                    f"Its API key, shown only now: {api_key}"
                )
            return tenant
        try:
            return find_tenant(reference=given)
        except (UnknownTenant, AmbiguousTenant) as error:
            raise CommandError(f"{error} Or omit --tenant for the demo tenant.") from None

    def _batch_jobs(self, jobs: list[Job], *, size: int) -> list[Job]:
        """The same calls, `size` to a batch task: one job per batch, each of one kind."""
        self.tasks = {job.kind: record_calls_batch for job in jobs}
        payloads = defaultdict(list)
        for job in jobs:
            payloads[job.kind].extend(job.arguments["args"])
        return [
            Job(
                kind,
                {"args": [batch[i : i + size]], "kwargs": {"endpoint": kind}},
                tuple(p["request_id"] for p in batch[i : i + size]),
            )
            for kind, batch in payloads.items()
            for i in range(0, len(batch), size)
        ]

    def _progress(self, done: int, total: int) -> None:
        if total >= 50 and (done % max(1, total // 10) == 0 or done == total):
            self.stdout.write(f"  {done}/{total} done")

    def _run_in_process(self, jobs: list[Job], *, concurrency: int) -> list[Outcome]:
        outcomes: list[Outcome] = []
        lock, stop = threading.Lock(), threading.Event()
        lanes = [jobs[i::concurrency] for i in range(min(concurrency, len(jobs)))]

        def run_lane(lane: list[Job]) -> None:
            try:
                for job in lane:
                    if stop.is_set():
                        break
                    result = self.tasks[job.kind].apply(**job.arguments)
                    ok = result.successful()
                    with lock:
                        outcomes.append(Outcome(job, DONE if ok else FAILED, result.result))
                        if not ok and isinstance(result.result, DATABASE_UNAVAILABLE):
                            # The task retried already: the database is gone, stop sending calls.
                            self.unavailable = self.unavailable or ("database", result.result)
                            stop.set()
                        self._progress(len(outcomes), len(jobs))
            finally:
                connections.close_all()

        with ThreadPoolExecutor(max_workers=len(lanes)) as pool:
            list(pool.map(run_lane, lanes))
        ran = {id(outcome.job) for outcome in outcomes}
        return outcomes + [Outcome(job, NOT_DONE) for job in jobs if id(job) not in ran]

    def _run_via_broker(self, jobs: list[Job], *, timeout: float, broker: str) -> list[Outcome]:
        sent = []
        for job in jobs:
            try:
                sent.append((job, self.tasks[job.kind].apply_async(**job.arguments)))
            except Exception as error:  # kombu's, redis's and SQLAlchemy's errors alike
                raise CommandError(
                    f"Could not enqueue on the {broker} broker ({one_line(error)}). "
                    f"{len(sent)} of {len(jobs)} task(s) were enqueued before that; they stay queued "
                    f"and a worker records them when it runs."
                ) from None
        self.stdout.write(f"  enqueued {len(sent)}; waiting up to {timeout:g}s for a worker (-Q llm)")
        deadline, outcomes = time.monotonic() + timeout, []
        for job, result in sent:
            if self.unavailable is not None:
                outcomes.append(Outcome(job, NOT_DONE))
                continue
            try:
                remaining = deadline - time.monotonic()
                if remaining <= 0 and not result.ready():
                    raise ResultTimeout()
                value = result.get(timeout=max(remaining, 0.1), interval=0.2, propagate=False)
            except ResultTimeout:
                outcomes.append(Outcome(job, NOT_DONE))
            except DBError as error:  # the django-db result backend is this database
                self.unavailable = ("database", error)
                outcomes.append(Outcome(job, NOT_DONE))
            except Exception as error:  # another result backend (Redis) stopped answering
                self.unavailable = ("result backend", error)
                outcomes.append(Outcome(job, NOT_DONE))
            else:
                outcomes.append(Outcome(job, DONE if result.successful() else FAILED, value))
            self._progress(len(outcomes), len(sent))
        return outcomes

    def _report(self, tenant: Tenant, outcomes: list[Outcome], *, elapsed: float, options: dict) -> None:
        kinds = [kind for kind in ENDPOINTS if any(outcome.job.kind == kind for outcome in outcomes)]
        recorded, repeated, failed, not_done = Counter(), Counter(), Counter(), Counter()
        blocked, budget_notes = Counter(), {}
        errors: dict[str, str] = {}
        job_ids = defaultdict(list)
        forced = 0
        for outcome in outcomes:
            kind, value = outcome.job.kind, outcome.value
            if outcome.state == NOT_DONE:
                not_done[kind] += outcome.calls
            elif outcome.state == FAILED and isinstance(value, BudgetExceeded):
                blocked[kind] += outcome.calls  # the budget at work: a decision, not a failure
                budget_notes.setdefault(value.budget, one_line(value))
            elif outcome.state == FAILED:
                failed[kind] += outcome.calls
                if isinstance(value, ForcedFailure) and options["force_failure"]:
                    forced += outcome.calls
                else:
                    errors.setdefault(
                        kind, one_line(value) if isinstance(value, BaseException) else str(value)
                    )
            elif "already_recorded" in value:  # a batch task's counts
                recorded[kind] += value["recorded"]
                repeated[kind] += value["already_recorded"]
            else:
                (recorded if value["recorded"] else repeated)[kind] += 1
                if value.get("job_id"):
                    job_ids[kind].append(value["job_id"])

        # Costs come from the tenant's rows, by the request ids of the tasks that finished.
        done_ids = [rid for o in outcomes if o.state == DONE for rid in o.job.request_ids]
        failed_ids = [rid for o in outcomes if o.state == FAILED for rid in o.job.request_ids]
        month = row = None
        try:
            with tenant_context(tenant.id):
                costs = selectors.call_totals_by_endpoint(request_ids=done_ids)
                recorded_despite_failure = sum(
                    t.calls for t in selectors.call_totals_by_endpoint(request_ids=failed_ids).values()
                )
                month = selectors.current_utc_month()
                row = selectors.get_monthly_cost(month=month)
        except DBError as error:
            costs, recorded_despite_failure = None, 0
            self.unavailable = self.unavailable or ("database", error)

        self.stdout.write(f"\nFinished in {elapsed:.2f}s.")
        headers = [
            "kind",
            "recorded",
            "repeated",
            "blocked",
            "failed",
            *(["not done"] if any(not_done.values()) else []),
            "cost",
        ]
        rows = [
            [
                kind,
                recorded[kind],
                repeated[kind],
                blocked[kind],
                failed[kind],
                *([not_done[kind]] if "not done" in headers else []),
                "unknown"
                if costs is None
                else format_micros(costs[kind].cost_micros if kind in costs else 0),
            ]
            for kind in kinds
        ]
        for line in format_table(headers, rows):
            self.stdout.write(line)
        for kind, error in errors.items():
            self.stdout.write(self.style.ERROR(f"  {kind} failed: {error}"))
        for note in budget_notes.values():
            self.stdout.write(self.style.WARNING(f"  blocked: {note}"))
        for kind in (kind for kind in kinds if job_ids[kind]):
            ids = job_ids[kind]
            shown = ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
            self.stdout.write(f"  {kind} jobs completed: {shown}")
        if forced:
            outcome = (
                "nothing was recorded"
                if not recorded_despite_failure
                else f"yet {recorded_despite_failure} of them were recorded"
            )
            self.stdout.write(f"{forced} call(s) failed as asked (--force-failure); {outcome}.")

        if month is not None:
            for line in month_to_date_lines(tenant.name, month, row):
                self.stdout.write(line)

        self._raise_for_failures(
            recorded=sum(recorded.values()),
            failed=sum(failed.values()) - forced,
            not_done=sum(not_done.values()),
            recorded_despite_failure=recorded_despite_failure,
            costs_read=costs is not None,
            timeout=options["timeout"],
        )

    def _raise_for_failures(self, **counts) -> None:
        """The one-line error the command ends with, if the run did not do what was asked."""
        explanation, error = run_failure(unavailable=self.unavailable, **counts)
        if explanation:
            self.stdout.write(explanation)
        if error:
            raise CommandError(error)
