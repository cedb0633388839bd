"""Check every tenant's monthly cost rows against the sum of its call rows (`--fix` repairs).

Exits non-zero when drift is found and not fixed, so a scheduler or a person notices.
"""

from django.core.management.base import BaseCommand, CommandError

from llm.money import format_micros
from llm.services import reconcile_monthly_costs


class Command(BaseCommand):
    help = "Reconcile llm_monthly_costs against llm_api_calls for every tenant; --fix repairs drift."

    def add_arguments(self, parser):
        parser.add_argument(
            "--fix", action="store_true", help="Add the missing difference to each drifted month."
        )

    def handle(self, *args, fix: bool, **options):
        report = reconcile_monthly_costs(fix=fix)
        for tenant_id, drift in report.drifts:
            self.stdout.write(
                f"drift: tenant {tenant_id} month {drift.month:%Y-%m}: monthly row says "
                f"{drift.recorded_calls} calls / {format_micros(drift.recorded_cost_micros)}, "
                f"the calls add up to {drift.actual_calls} / {format_micros(drift.actual_cost_micros)}"
                + (" -> fixed" if fix else "")
            )
        for tenant_id, drift in report.budget_drifts:
            self.stdout.write(
                f"budget drift: tenant {tenant_id} {drift.period} from "
                f"{drift.period_start:%Y-%m-%d %H:%M}: spent {format_micros(drift.recorded_spent_micros)}, "
                f"reserved {format_micros(drift.recorded_reserved_micros)}; the calls and open "
                f"reservations add up to {format_micros(drift.actual_spent_micros)} and "
                f"{format_micros(drift.actual_reserved_micros)}" + (" -> fixed" if fix else "")
            )
        drifted = bool(report.drifts or report.budget_drifts)
        summary = (
            f"Checked {report.tenants_checked} tenant(s): {len(report.drifts)} month(s) and "
            f"{len(report.budget_drifts)} budget period(s) drifted"
        )
        if drifted and not fix:
            raise CommandError(f"{summary}. Run with --fix to repair them.")
        self.stdout.write(summary + ("; all repaired." if drifted else "."))
