"""One benchmark run: its phases, the figures they produce, and the report."""

import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings as django_settings
from django.db import connections

from bench import celery_e2e, exactness, reads, workloads
from bench.database import BASE_DIR, BenchDatabase, create_tenants, give_budgets, migrate_and_reset
from bench.load import Throughput, measure
from bench.profile import wire_profile
from llm.money import format_micros


@dataclass(frozen=True)
class Scale:
    warmup: float  # seconds of each measurement not counted
    seconds_per_workload: float  # counted seconds each workload of a rotation gets
    per_tenant: int  # generated calls per tenant for the reads (x 1,000 tenants)
    celery_tasks: int  # tasks per Celery figure and round
    celery_rounds: int
    batch_size: int
    celery_batches: int  # batch tasks per round


FULL = Scale(1.0, 3.0, 1000, 1000, 4, 1000, 10)
QUICK = Scale(0.5, 1.0, 50, 150, 2, 200, 4)
WRITE_CONCURRENCY = (1, 8, 32)
READ_CONCURRENCY = (1, 8)
BATCH_CONCURRENCY = (1, 4)
SLICE_SECONDS = 0.5

NOOP_TASK, RAW_TASK, ROUTE_TASK = "bench.noop", "bench.raw_route", "llm.route"
# Celery figure -> (task, tenants: one hot tenant, 1,000, or none for the no-op)
CELERY_FIGURES = {
    "noop": (NOOP_TASK, None),
    "raw-hot": (RAW_TASK, "hot"),
    "hot": (ROUTE_TASK, "hot"),
    "raw-many": (RAW_TASK, "many"),
    "many": (ROUTE_TASK, "many"),
    "bud-hot": (ROUTE_TASK, "hot budgeted"),
    "bud-many": (ROUTE_TASK, "many budgeted"),
}


GOAL_SERVICE = 0.8  # service path / baseline, calls per second, in every shape
GOAL_CELERY = 0.85  # llm.route / the raw-SQL task bench.raw_route, tasks per second
GOAL_RLS = 1.1  # RLS read time / the same read without RLS
GOAL_BATCH = 10.0  # batched ingest / the best per-call hot-tenant baseline, calls per second
GOAL_BUDGETED = 0.7  # the service path for budgeted tenants / for tenants without, calls per second

# Budgets of the budgeted write figures: far above what a run spends, so every call is admitted
# and the figure is the cost of admission and settlement, not of refusals.
ROOMY_CAP_MICROS = 1_000_000 * 1_000_000  # $1,000,000 a month
BURST_CLIENTS, BURST_CALLS_FITTING = 32, 200


def _code_version() -> str:
    """The commit measured, and whether the working tree differed from it (read-only git)."""
    try:
        head, dirty = (
            subprocess.run(["git", *args], capture_output=True, text=True, check=True, cwd=BASE_DIR)
            for args in (["rev-parse", "--short", "HEAD"], ["status", "--porcelain"])
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git)"
    return head.stdout.strip() + (" with uncommitted changes" if dirty.stdout.strip() else "")


def _on_off(flag: bool) -> str:
    return "true" if flag else "false"


# What the service path runs with is the project's setting; the comparison forces what
# DATABASE_PREPARED_STATEMENTS=false gives, on the same connections in the same rotation.
SERVICE_LABEL = "service path (project settings)"
CLIENT_BINDING_LABEL = "service path, DATABASE_PREPARED_STATEMENTS=false"
BUDGETED_LABEL = "service path, budgeted tenant"


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def fmt(value: float) -> str:
    return f"{value:,.0f}"


def verdict(met: bool) -> str:
    return "met" if met else "**NOT met**"


@dataclass
class Run:
    database: BenchDatabase
    scale: Scale
    redis_url: str
    log_dir: Path
    info: dict = field(default_factory=dict)
    expected: dict = field(default_factory=dict)  # figure tag -> calls its clients completed
    read_rows: list = field(default_factory=list)
    write_rows: list = field(default_factory=list)
    batch_rows: list = field(default_factory=list)
    profile_rows: list = field(default_factory=list)
    celery_rows: dict | None = None  # figure -> [tasks, calls, seconds]
    celery_note: str = ""
    burst: workloads.CapBurst | None = None
    exact: exactness.Exactness | None = None

    # --- phases ---------------------------------------------------------------------------

    def machine(self, *, quick: bool) -> None:
        meminfo = Path("/proc/meminfo").read_text().split("\n")[0].split()
        with self.database.superuser.connect() as conn:
            others = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                "AND pid <> pg_backend_pid()"
            ).fetchone()[0]
            settings = dict(
                conn.execute(
                    "SELECT name, setting || coalesce(unit, '') FROM pg_settings WHERE name = ANY(%s)",
                    [["max_connections", "shared_buffers", "synchronous_commit", "fsync"]],
                ).fetchall()
            )
        self.info = {
            "cpus": os.cpu_count(),
            "memory": f"{int(meminfo[1]) / 1024 / 1024:.1f} GiB",
            "postgres": self.database.server_version().split(" on ")[0],
            "postgres settings": ", ".join(f"{k}={v}" for k, v in sorted(settings.items())),
            "server": self.database.runtime.host or "(default)",
            "python": platform.python_version(),
            "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "other client connections at start": others,
            "scale": "QUICK (smoke test)" if quick else "full",
            "code": _code_version(),
            "DATABASE_PREPARED_STATEMENTS": _on_off(django_settings.DATABASE_PREPARED_STATEMENTS),
        }

    def setup(self) -> None:
        progress(f"migrating and emptying database {self.database.runtime.dbname}")
        migrate_and_reset(self.database)
        self.hot = create_tenants(self.database, count=1, prefix="bench hot tenant")
        self.many = create_tenants(self.database, count=1000, prefix="bench tenant")
        self.hot_budgeted = create_tenants(self.database, count=1, prefix="bench budgeted hot tenant")
        self.many_budgeted = create_tenants(self.database, count=1000, prefix="bench budgeted tenant")
        give_budgets(
            self.database, tenants=self.hot_budgeted + self.many_budgeted, monthly_cap_micros=ROOMY_CAP_MICROS
        )
        self.burst_tenant = create_tenants(self.database, count=1, prefix="bench burst tenant")[0]
        connections.close_all()  # the load processes fork from here: no connection to share

    def _measure(self, factories, *, concurrency: int) -> list[Throughput]:
        duration = self.scale.seconds_per_workload * len(factories)
        return measure(
            factories,
            concurrency=concurrency,
            warmup=self.scale.warmup,
            duration=duration,
            slice_seconds=SLICE_SECONDS,
        )

    def reads(self) -> None:
        rows = self.scale.per_tenant * len(self.many)
        progress(f"generating {rows:,} calls over {len(self.many):,} tenants for the reads")
        started = time.monotonic()
        total = reads.generate_calls(self.database, tenants=self.many, per_tenant=self.scale.per_tenant)
        self.info["generated calls"] = f"{total:,} in {time.monotonic() - started:.0f}s"
        self.expected["gen"] = total
        for query in reads.QUERIES:
            for concurrency in READ_CONCURRENCY:
                progress(f"reads: {query}, {concurrency} client(s)")
                bare, same, rls = self._measure(
                    [
                        reads.unprotected_bare_reads(self.database, query=query, tenants=self.many),
                        reads.unprotected_reads_same_statements(
                            self.database, query=query, tenants=self.many
                        ),
                        reads.rls_reads(self.database, query=query, tenants=self.many),
                    ],
                    concurrency=concurrency,
                )
                self.read_rows.append((query, concurrency, bare, same, rls))

    def writes(self) -> None:
        for shape, tenants, budgeted in (
            ("1 (hot)", self.hot, self.hot_budgeted),
            ("1,000", self.many, self.many_budgeted),
        ):
            for concurrency in WRITE_CONCURRENCY:
                progress(f"per-call writes: {shape} tenant(s), {concurrency} client(s)")
                tags = [f"{kind}-{len(tenants)}-{concurrency}" for kind in ("base", "svc", "cli", "bud")]
                figures = self._measure(
                    [
                        workloads.baseline(tenants=tenants, tag=tags[0]),
                        workloads.service(tenants=tenants, tag=tags[1]),
                        workloads.service_client_binding(tenants=tenants, tag=tags[2]),
                        workloads.service(tenants=budgeted, tag=tags[3]),
                    ],
                    concurrency=concurrency,
                )
                for tag, figure in zip(tags, figures, strict=True):
                    self.expected[tag] = figure.total_ops
                self.write_rows.append((shape, concurrency, *figures))

    def cap_burst(self) -> None:
        progress(f"budget burst: {BURST_CLIENTS} clients against a cap of {BURST_CALLS_FITTING} estimates")
        tag = "burst"
        self.burst = workloads.cap_burst(
            tenant=self.burst_tenant, tag=tag, clients=BURST_CLIENTS, calls_fitting=BURST_CALLS_FITTING
        )
        self.expected[tag] = self.burst.admitted
        with self.database.superuser.connect() as conn:
            self.burst_spent = conn.execute(
                "SELECT spent_micros, reserved_micros FROM llm_budget_state "
                "WHERE tenant_id = %s AND period = 'month'",
                [self.burst_tenant],
            ).fetchone()
        connections.close_all()

    def batches(self) -> None:
        size = self.scale.batch_size
        for concurrency in BATCH_CONCURRENCY:
            progress(f"batched ingest: {size} calls a batch, hot tenant, {concurrency} client(s)")
            tag = f"batch-{concurrency}"
            (figure,) = self._measure(
                [workloads.batched(tenants=self.hot, tag=tag, size=size)], concurrency=concurrency
            )
            self.expected[tag] = figure.total_ops * size
            self.batch_rows.append((size, concurrency, figure))

    def profiles(self) -> None:
        progress("wire profile of one call (hot tenant)")
        size = self.scale.batch_size
        for label, tag, factory, calls in (
            ("baseline: raw SQL through psycopg", "prof-base", workloads.baseline, 1),
            (SERVICE_LABEL, "prof-svc", workloads.service, 1),
            (CLIENT_BINDING_LABEL, "prof-cli", workloads.service_client_binding, 1),
            (BUDGETED_LABEL, "prof-bud", workloads.service, 1),
            (f"batched, {size} calls a batch", "prof-batch", workloads.batched, size),
        ):
            options = {"size": size} if calls > 1 else {}
            tenants = self.hot_budgeted if label == BUDGETED_LABEL else self.hot
            profile = wire_profile(
                factory(tenants=tenants, tag=tag, **options),
                ops=max(3, 60 // calls),
                calls_per_op=calls,
                warmup=10 if calls == 1 else 1,
            )
            self.profile_rows.append((label, profile))
            self.expected[tag] = profile.ops_run * calls
        connections.close_all()

    def celery(self) -> None:
        if not celery_e2e.redis_available(self.redis_url):
            self.celery_note = f"not measured: no Redis answers at {self.redis_url}"
            progress(self.celery_note)
            return
        from skeldir.celery import app

        progress("Celery: starting a worker with 2 processes")
        worker = celery_e2e.BenchWorker(redis_url=self.redis_url, log_path=self.log_dir / "worker.log")
        try:
            self.celery_rows = self._celery_figures(app, worker)
        finally:
            worker.stop()
        app.pool.force_close_all()

    def _celery_figures(self, app, worker) -> dict:
        n, size = self.scale.celery_tasks, self.scale.batch_size
        prefix = "cel"

        def single_calls(payloads):
            return [([payload], {}) for payload in payloads]

        # Warm-up: imports, each process's connections, psycopg's type caches and prepared
        # statements (the raw task's connection is its own).
        for name in (NOOP_TASK, RAW_TASK, ROUTE_TASK):
            tag = f"{prefix}-warm{name.rsplit('.', 1)[1].replace('_', '')}"
            warm = workloads.batch_payloads(tenants=self.hot, tag=tag, client=0, i=0, size=40)
            calls = 0 if name == NOOP_TASK else len(warm)
            worker.run(app, name, single_calls(warm), calls=calls, timeout=120)
            self.expected[tag] = calls

        totals = {key: [0, 0, 0.0] for key in (*CELERY_FIGURES, "batch")}
        for round_ in range(self.scale.celery_rounds):
            progress(f"Celery: round {round_ + 1} of {self.scale.celery_rounds}")
            # The raw task and llm.route take turns going first, round by round, so that
            # neither always runs right after the other (caches, the server's background work).
            figures = ["noop"]
            for trio in (("raw-hot", "hot", "bud-hot"), ("raw-many", "many", "bud-many")):
                figures += trio if round_ % 2 == 0 else trio[::-1]
            for key in figures:
                name, shape = CELERY_FIGURES[key]
                tenants = {
                    "hot": self.hot,
                    "many": self.many,
                    "hot budgeted": self.hot_budgeted,
                    "many budgeted": self.many_budgeted,
                    None: self.hot,
                }[shape]
                tag = f"{prefix}-{key}"
                payloads = workloads.batch_payloads(tenants=tenants, tag=tag, client=0, i=round_, size=n)
                calls = 0 if name == NOOP_TASK else n
                result = worker.run(app, name, single_calls(payloads), calls=calls, timeout=900)
                self.expected[tag] = self.expected.get(tag, 0) + calls
                totals[key][0] += result.tasks
                totals[key][1] += result.calls
                totals[key][2] += result.seconds
            tag = f"{prefix}-batch"
            batches = [
                workloads.batch_payloads(tenants=self.hot, tag=tag, client=1 + round_, i=b, size=size)
                for b in range(self.scale.celery_batches)
            ]
            result = worker.run(
                app,
                "llm.record_calls_batch",
                [([batch], {"endpoint": "route"}) for batch in batches],
                calls=size * len(batches),
                timeout=900,
            )
            self.expected[tag] = self.expected.get(tag, 0) + result.calls
            totals["batch"][0] += result.tasks
            totals["batch"][1] += result.calls
            totals["batch"][2] += result.seconds
        return totals

    def exactness(self) -> exactness.Exactness:
        progress("exactness: monthly rows against the call rows, and every figure's calls")
        self.exact = exactness.check(
            self.database,
            expected_calls=self.expected,
            expected_blocks=self.burst.blocked if self.burst else 0,
        )
        return self.exact

    # --- the report -------------------------------------------------------------------------

    def report(self, *, elapsed: float) -> str:
        lines = ["# Benchmark run", ""]
        self.info["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
        self.info["run time"] = f"{elapsed:.0f}s"
        lines += [f"- {key}: {value}" for key, value in self.info.items()]
        goals = []

        best_hot = max(row[2].per_second for row in self.write_rows if row[0] == "1 (hot)")
        lines += [
            "",
            "## Per-call writes (calls/s): call row + monthly upsert, one transaction, as the runtime role",
            "",
            f"| tenants | clients | baseline: raw SQL | {SERVICE_LABEL} | ratio | goal >= {GOAL_SERVICE} "
            f"| comparison: {CLIENT_BINDING_LABEL} | ratio |",
            "|---|---:|---:|---:|---:|---|---:|---:|",
        ]
        budgeted_lines = [
            "",
            "## Budgeted calls (calls/s): the service path for tenants with a monthly budget",
            "",
            "Admission (the reservation, committed before the provider call) and settlement (in the "
            "call's transaction) added to the same service path; a budget far above what the run "
            "spends, so every call is admitted. Same rotation as the table above.",
            "",
            f"| tenants | clients | {SERVICE_LABEL}, no budget | {BUDGETED_LABEL} | ratio "
            f"| goal >= {GOAL_BUDGETED} |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for shape, concurrency, base, service, client_binding, budgeted in self.write_rows:
            ratio = service.per_second / base.per_second
            other = client_binding.per_second / base.per_second
            with_budget = budgeted.per_second / service.per_second
            goals.append(
                (
                    f"budgeted / unbudgeted service path, {shape} tenant(s), {concurrency} client(s): "
                    f"{with_budget:.2f}",
                    with_budget >= GOAL_BUDGETED,
                )
            )
            budgeted_lines.append(
                f"| {shape} | {concurrency} | {fmt(service.per_second)} | {fmt(budgeted.per_second)} "
                f"| {with_budget:.2f} | {verdict(with_budget >= GOAL_BUDGETED)} |"
            )
            goals.append(
                (
                    f"service path, {shape} tenant(s), {concurrency} client(s): {ratio:.2f} "
                    f"(comparison, client-side binding: {other:.2f})",
                    ratio >= GOAL_SERVICE,
                )
            )
            lines.append(
                f"| {shape} | {concurrency} | {fmt(base.per_second)} | {fmt(service.per_second)} "
                f"| {ratio:.2f} | {verdict(ratio >= GOAL_SERVICE)} | {fmt(client_binding.per_second)} "
                f"| {other:.2f} |"
            )
        lines += budgeted_lines
        if self.burst is not None:
            burst = self.burst
            lines += [
                "",
                f"**A cap under a burst.** {BURST_CLIENTS} clients at once, each calling "
                "`route_request` for one tenant until its first refusal, against a monthly cap of "
                f"{format_micros(burst.cap_micros)} ({BURST_CALLS_FITTING} estimates of "
                f"{format_micros(burst.estimate_micros)}; calls cost less than their estimate, so "
                f"more fit once settled): {burst.admitted:,} admitted, {burst.blocked:,} blocked; "
                f"spent {self.burst_spent[0]:,} µUSD of the cap's {burst.cap_micros:,} "
                f"(overshoot {max(0, self.burst_spent[0] - burst.cap_micros):,}), "
                f"{self.burst_spent[1]:,} µUSD still reserved.",
            ]

        lines += [
            "",
            f"## Batched ingest (calls/s), hot tenant; ratio to the best per-call hot-tenant baseline "
            f"({fmt(best_hot)}/s)",
            "",
            f"| calls a batch | clients | calls/s | ratio | goal >= {GOAL_BATCH:.0f} |",
            "|---:|---:|---:|---:|---|",
        ]
        for size, concurrency, figure in self.batch_rows:
            rate = figure.per_second * size
            lines.append(
                f"| {size:,} | {concurrency} | {fmt(rate)} | {rate / best_hot:.1f} "
                f"| {verdict(rate / best_hot >= GOAL_BATCH)} |"
            )
        best_batch = max(figure.per_second * size for size, _, figure in self.batch_rows)
        goals.append(
            (
                f"batched ingest, best of the rows above: {best_batch / best_hot:.1f}",
                best_batch / best_hot >= GOAL_BATCH,
            )
        )

        lines += ["", "## Celery end to end through Redis, 2 worker processes", ""]
        if self.celery_rows is None:
            lines.append(f"{self.celery_note}")
            goals.append(("Celery end to end", None))
        else:
            rows = self.celery_rows
            lines += [
                "| task | tenants | tasks | tasks/s | calls/s | ratio to no-op (tasks/s) "
                f"| ratio to {RAW_TASK} (tasks/s) | goal >= {GOAL_CELERY} |",
                "|---|---:|---:|---:|---:|---:|---:|---|",
            ]

            def rate(key: str) -> float:
                return rows[key][0] / rows[key][2]

            lines.append(f"| {NOOP_TASK} | - | {rows['noop'][0]:,} | {fmt(rate('noop'))} | - | 1.00 | - | |")
            for raw_key, key, budgeted_key, tenants in (
                ("raw-hot", "hot", "bud-hot", "1 (hot)"),
                ("raw-many", "many", "bud-many", "1,000"),
            ):
                for figure in (raw_key, key, budgeted_key):
                    tasks, calls, seconds = rows[figure]
                    to_noop = rate(figure) / rate("noop")
                    ratio = rate(figure) / rate(raw_key)
                    label, judged = CELERY_FIGURES[figure][0], ""
                    if figure == key:
                        judged = verdict(ratio >= GOAL_CELERY)
                        goals.append(
                            (
                                f"Celery {ROUTE_TASK} / {RAW_TASK}, {tenants} tenant(s): {ratio:.2f} "
                                f"(to {NOOP_TASK}: {to_noop:.2f})",
                                ratio >= GOAL_CELERY,
                            )
                        )
                    elif figure == budgeted_key:
                        label = f"{ROUTE_TASK}, budgeted (to unbudgeted: {rate(figure) / rate(key):.2f})"
                    lines.append(
                        f"| {label} | {tenants} | {tasks:,} | {fmt(tasks / seconds)} "
                        f"| {fmt(calls / seconds)} | {to_noop:.2f} | {ratio:.2f} | {judged} |"
                    )
            tasks, calls, seconds = rows["batch"]
            lines.append(
                f"| llm.record_calls_batch, {calls // tasks:,} calls each | 1 (hot) "
                f"| {tasks:,} | {fmt(tasks / seconds)} | {fmt(calls / seconds)} | - | - | |"
            )

        lines += [
            "",
            "## Tenant-scoped reads (reads/s) over the generated calls; ratios are time per read",
            "",
            "| query | clients | bare query, no RLS | same statements, no RLS | RLS (runtime role) "
            f"| RLS / same statements | goal <= {GOAL_RLS} | RLS / bare query |",
            "|---|---:|---:|---:|---:|---:|---|---:|",
        ]
        for query, concurrency, bare, same, rls in self.read_rows:
            ratio = same.per_second / rls.per_second
            goals.append((f"RLS reads, {query}, {concurrency} client(s): {ratio:.2f}", ratio <= GOAL_RLS))
            lines.append(
                f"| {query} | {concurrency} | {fmt(bare.per_second)} | {fmt(same.per_second)} "
                f"| {fmt(rls.per_second)} | {ratio:.2f} | {verdict(ratio <= GOAL_RLS)} "
                f"| {bare.per_second / rls.per_second:.2f} |"
            )

        cpu = {
            "baseline: raw SQL through psycopg": self.write_rows[0][2].cpu_us_per_op,
            SERVICE_LABEL: self.write_rows[0][3].cpu_us_per_op,
            CLIENT_BINDING_LABEL: self.write_rows[0][4].cpu_us_per_op,
            BUDGETED_LABEL: self.write_rows[0][5].cpu_us_per_op,
        }
        for size, concurrency, figure in self.batch_rows:
            if concurrency == 1:
                cpu[f"batched, {size} calls a batch"] = figure.cpu_us_per_op / size
        lines += [
            "",
            "## The hot path, per call (hot tenant; client CPU from the 1-client run)",
            "",
            "| path | round trips | statements (with BEGIN, COMMIT) | parsed and planned | client CPU (us) |",
            "|---|---:|---:|---:|---:|",
        ]
        for label, profile in self.profile_rows:
            lines.append(
                f"| {label} | {profile.round_trips:.2f} | {profile.statements:.2f} | {profile.parsed:.2f} "
                f"| {cpu.get(label, float('nan')):.0f} |"
            )

        exact = self.exact
        lines += [
            "",
            "## Exactness",
            "",
            (
                f"OK: {exact.call_rows:,} call rows, {exact.cost_micros:,} µUSD "
                f"({format_micros(exact.cost_micros)}), {exact.monthly_rows:,} monthly rows; every "
                "monthly row equals the sums of its call rows (calls, µUSD, per-model breakdown), its "
                "cents derived half up from its exact µUSD, and every figure recorded exactly the calls "
                "its clients completed. Budgets: "
                f"{exact.budget_states:,} budget periods, {format_micros(exact.budget_spent_micros)} "
                f"spent, the fullest at {exact.highest_fill:.1%} of its cap, overshoot "
                f"{exact.overshoot_micros:,} µUSD; every period's spent is its settled reservations, "
                "nothing left reserved, every budgeted call settled once at its cost, one decision "
                "per attempt."
                if exact.ok
                else f"**FAILED**: {len(exact.problems)} problem(s):\n"
                + "\n".join(f"- {p}" for p in exact.problems[:20])
            ),
            "",
            "## Goals",
            "",
        ]
        lines += [f"- {name}: {'not measured' if met is None else verdict(met)}" for name, met in goals]
        return "\n".join(lines)
