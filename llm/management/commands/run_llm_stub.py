"""Run stub LLM work for a tenant and print what was recorded.

In-process by default, through Celery's own execution path (`Task.apply`), so no broker or
worker is needed; `--via-broker` enqueues the same tasks and waits for a worker to run them.
"""

import logging
import time
import uuid
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor

from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from llm import selectors
from llm.models import Tenant
from llm.money import format_micros
from llm.payloads import ENDPOINTS, Endpoint, LLMTaskPayload, task_arguments
from llm.services import BATCH_ENDPOINTS, create_tenant
from llm.tasks import LLM_TASKS, record_calls_batch
from skeldir.tenancy import tenant_context

DEMO_TENANT_NAME = "Demo tenant"
QUESTIONS = [
    "Why is Google Ads underperforming this month?",
    "Why did Meta Ads conversions drop after the 12th?",
    "Why is email revenue up while its spend is flat?",
]


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
        level = task_logger.level
        if options["verbosity"] < 2:
            # Each in-process task logs a line of its own; the report below says it all.
            task_logger.setLevel(logging.WARNING)
        try:
            self._handle(**options)
        finally:
            task_logger.setLevel(level)

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
        jobs = [
            (
                kind,
                task_arguments(
                    kind,
                    LLMTaskPayload(
                        tenant_id=tenant.id,
                        correlation_id=f"stub-{run_id}-{kind}-{i}",
                        prompt=example_prompt(kind, i),
                        max_cost_cents=options["max_cost_cents"],
                    ),
                    force_failure=options["force_failure"],
                ),
            )
            for kind in kinds
            for i in range(options["count"])
        ]
        where = "via the broker" if options["via_broker"] else "in-process"
        self.stdout.write(f"Running {len(jobs)} stub call(s) for {tenant.name} ({tenant.id}) {where}...")
        if batch_size is not None:
            jobs = self._batch_jobs(jobs, size=batch_size)
            self.stdout.write(
                f"  in {len(jobs)} batch task(s) of up to {batch_size} call(s) ('failed' counts batches)"
            )
        started = time.monotonic()
        if options["via_broker"]:
            outcomes = self._run_via_broker(jobs, timeout=options["timeout"])
        else:
            outcomes = self._run_in_process(jobs, concurrency=options["concurrency"])
        self._report(tenant, outcomes, elapsed=time.monotonic() - started)
        if any(not ok for _, ok, _ in outcomes):
            raise CommandError("Some calls failed; see above. Failed calls recorded nothing.")

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
            tenant = Tenant.objects.filter(id=uuid.UUID(given)).first()
        except ValueError:
            matches = list(Tenant.objects.filter(name=given)[:2])
            if len(matches) > 1:
                raise CommandError(f"More than one tenant is named {given!r}; pass its id.") from None
            tenant = matches[0] if matches else None
        if tenant is None:
            raise CommandError(
                f"No tenant {given!r}. Pass an existing tenant's id or name, or omit --tenant."
            )
        return tenant

    def _batch_jobs(self, jobs, *, size: int):
        """The same calls, `size` to a batch task: one job per batch, each of one kind."""
        self.tasks = {kind: record_calls_batch for kind, _ in jobs}
        payloads = defaultdict(list)
        for kind, arguments in jobs:
            payloads[kind].extend(arguments["args"])
        return [
            (kind, {"args": [batch[i : i + size]], "kwargs": {"endpoint": kind}})
            for kind, batch in payloads.items()
            for i in range(0, len(batch), size)
        ]

    def _progress(self, done: int, total: int) -> None:
        if total >= 50 and (done % max(1, total // 10) == 0 or done == total):
            self.stdout.write(f"  {done}/{total} done")

    def _run_in_process(self, jobs, *, concurrency: int):
        outcomes, done = [], 0
        lanes = [jobs[i::concurrency] for i in range(min(concurrency, len(jobs)))]

        def run_lane(lane):
            nonlocal done
            try:
                for kind, arguments in lane:
                    result = self.tasks[kind].apply(**arguments)
                    outcome = (kind, result.successful(), result.result)
                    outcomes.append(outcome)
                    done += 1
                    self._progress(done, len(jobs))
            finally:
                connections.close_all()

        with ThreadPoolExecutor(max_workers=len(lanes)) as pool:
            list(pool.map(run_lane, lanes))
        return outcomes

    def _run_via_broker(self, jobs, *, timeout: float):
        pending = [(kind, self.tasks[kind].apply_async(**arguments)) for kind, arguments in jobs]
        self.stdout.write(f"  enqueued {len(pending)}; waiting up to {timeout:.0f}s for a worker (-Q llm)")
        deadline, outcomes = time.monotonic() + timeout, []
        for kind, result in pending:
            try:
                value = result.get(timeout=max(0.1, deadline - time.monotonic()), propagate=False)
                outcomes.append((kind, result.successful(), value))
            except TimeoutError:
                outcomes.append((kind, False, TimeoutError(f"no worker finished task {result.id} in time")))
            self._progress(len(outcomes), len(jobs))
        return outcomes

    def _report(self, tenant: Tenant, outcomes, *, elapsed: float) -> None:
        recorded, repeated, failed, cost = Counter(), Counter(), Counter(), Counter()
        errors: dict[str, str] = {}
        job_ids = defaultdict(list)
        for kind, ok, value in outcomes:
            if not ok:
                failed[kind] += 1
                errors.setdefault(kind, f"{type(value).__name__}: {value}")
                continue
            if "already_recorded" in value:  # a batch task's counts
                recorded[kind] += value["recorded"]
                repeated[kind] += value["already_recorded"]
                cost[kind] += value["cost_micros"]
                continue
            (recorded if value["recorded"] else repeated)[kind] += 1
            if value["recorded"]:
                cost[kind] += value["cost_micros"]
            job_id = value.get("investigation_id") or value.get("job_id")
            if job_id:
                job_ids[kind].append(job_id)
        self.stdout.write(f"\nFinished in {elapsed:.2f}s.")
        self.stdout.write(f"{'kind':<22}{'recorded':>10}{'repeated':>10}{'failed':>8}{'cost':>12}")
        for kind in dict.fromkeys(k for k, _, _ in outcomes):
            self.stdout.write(
                f"{kind:<22}{recorded[kind]:>10}{repeated[kind]:>10}{failed[kind]:>8}{format_micros(cost[kind]):>12}"
            )
        for kind, error in errors.items():
            self.stdout.write(self.style.ERROR(f"  {kind} failed: {error}"))
        for kind, ids in job_ids.items():
            shown = ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
            self.stdout.write(f"  {kind} jobs completed: {shown}")

        with tenant_context(tenant.id):
            month = selectors.current_utc_month()
            row = selectors.get_monthly_cost(month=month)
        self.stdout.write(f"\n{tenant.name}, {month:%Y-%m} to date:")
        if row is None:
            self.stdout.write("  no calls recorded this month")
            return
        self.stdout.write(f"  {row.total_calls} calls, {format_micros(row.total_cost_micros)}")
        self.stdout.write(f"  {'model':<16}{'calls':>8}{'cost':>12}")
        for model, entry in sorted(row.model_breakdown.items()):
            self.stdout.write(f"  {model:<16}{entry['calls']:>8}{format_micros(entry['cost_micros']):>12}")
