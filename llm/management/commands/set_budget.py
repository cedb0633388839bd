"""Set, show or remove a tenant's LLM budget (operators only: tenants have no route to it).

manage.py set_budget --tenant ID|NAME --monthly-usd 250 [--hourly-usd 20]
    [--thresholds 50,80,100] [--on-exceed block|fallback] [--fallback-models a,b]
manage.py set_budget --tenant ID|NAME --remove
"""

import decimal

from django.core.management.base import BaseCommand, CommandError

from llm.models import OnExceed
from llm.money import MICROS_PER_USD, format_micros
from llm.services import AmbiguousTenant, InvalidBudget, UnknownTenant, find_tenant, remove_budget, set_budget


def usd_to_micros(value: str, option: str) -> int:
    try:
        amount = decimal.Decimal(value)
    except decimal.InvalidOperation:
        raise CommandError(f"{option}: {value!r} is not an amount of USD") from None
    micros = amount * MICROS_PER_USD
    if not amount.is_finite() or micros <= 0 or micros != micros.to_integral_value() or micros >= 2**62:
        raise CommandError(f"{option}: {value} is not a positive amount of whole micro-dollars")
    return int(micros)


def parse_list(value: str, option: str, item=str) -> list:
    try:
        return [item(part.strip()) for part in value.split(",") if part.strip()]
    except ValueError:
        raise CommandError(f"{option}: {value!r} is not a comma-separated list") from None


class Command(BaseCommand):
    help = "Set (or --remove) a tenant's monthly and hourly LLM budget."

    def add_arguments(self, parser):
        parser.add_argument("--tenant", required=True, help="The tenant's id or name.")
        parser.add_argument("--monthly-usd", help="Cap per calendar UTC month, in USD (e.g. 250 or 0.50).")
        parser.add_argument("--hourly-usd", help="Optional cap per hour, in USD.")
        parser.add_argument("--thresholds", default="50,80,100", help="Alert percents (default 50,80,100).")
        parser.add_argument("--on-exceed", choices=OnExceed.values, default=OnExceed.BLOCK)
        parser.add_argument(
            "--fallback-models", default="", help="With --on-exceed fallback: models, in order."
        )
        parser.add_argument("--remove", action="store_true", help="Remove the budget: unlimited again.")

    def handle(self, *args, **options):
        try:
            tenant = find_tenant(reference=options["tenant"])
        except (UnknownTenant, AmbiguousTenant) as error:
            raise CommandError(f"{error} Nothing was changed.") from None
        if options["remove"]:
            removed = remove_budget(tenant_id=tenant.id)
            self.stdout.write(
                f"{tenant.name}: budget removed; its calls are unlimited."
                if removed
                else f"{tenant.name} had no budget; nothing changed."
            )
            return
        if options["monthly_usd"] is None:
            raise CommandError("--monthly-usd is required (or --remove).")
        try:
            budget = set_budget(
                tenant_id=tenant.id,
                monthly_cap_micros=usd_to_micros(options["monthly_usd"], "--monthly-usd"),
                hourly_cap_micros=None
                if options["hourly_usd"] is None
                else usd_to_micros(options["hourly_usd"], "--hourly-usd"),
                thresholds=parse_list(options["thresholds"], "--thresholds", int),
                on_exceed=options["on_exceed"],
                fallback_models=parse_list(options["fallback_models"], "--fallback-models"),
            )
        except InvalidBudget as error:
            raise CommandError(str(error)) from None
        hourly = (
            "" if budget.hourly_cap_micros is None else f", {format_micros(budget.hourly_cap_micros)} an hour"
        )
        fallback = f" -> {', '.join(budget.fallback_models)}" if budget.fallback_models else ""
        self.stdout.write(
            f"{tenant.name}: {format_micros(budget.monthly_cap_micros)} a month{hourly}; alerts at "
            f"{', '.join(f'{t}%' for t in budget.thresholds)}; at the cap: {budget.on_exceed}{fallback}."
        )
