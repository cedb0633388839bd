"""Budgets in the admin, for the inspected tenant only (every page runs inside it, so row-level
security shows its rows and nobody else's). Superusers set, change and remove the tenant's
budget, in USD, through the services (set_budget also moves the cap of the periods in
progress; nothing is written when it refuses); staff with the view permission read it. The
budget's page shows where this month (and hour) stand and the month's daily spend by model.
Decisions, alerts with their deliveries, and reservations are read-only: the services keep
them. Tenants have no route to any of this."""

import decimal

from django import forms
from django.contrib import admin
from django.utils.html import format_html_join

from llm.admin import charts
from llm.admin.inspection import ReadOnlyAdmin, TenantScopedAdmin
from llm.models import AlertDelivery, Budget, BudgetAlert, BudgetDecision, BudgetReservation
from llm.money import MICROS_PER_USD, format_micros
from llm.services import check_budget, remove_budget, set_budget


def usd_field(label: str, help_text: str, *, required: bool = True) -> forms.DecimalField:
    # Six decimals are whole µUSD, what the database keeps; 12 digits before the point stay
    # far inside a bigint of µUSD.
    return forms.DecimalField(
        label=label, help_text=help_text, required=required, max_digits=18, decimal_places=6
    )


def usd_to_micros(amount: decimal.Decimal) -> int:
    return int(amount * MICROS_PER_USD)  # exact: at most six decimals (usd_field)


def micros_to_usd(micros: int) -> decimal.Decimal:
    return decimal.Decimal(micros) / MICROS_PER_USD  # 500000 -> 0.5, 250000000 -> 250


class BudgetForm(forms.ModelForm):
    """Amounts in USD for people, µUSD for the service. Checked by the service's own rules
    (check_budget) so that a refusal shows on the form and nothing is written."""

    monthly_cap_usd = usd_field("Monthly cap (USD)", "Per calendar UTC month, e.g. 250 or 0.50.")
    hourly_cap_usd = usd_field("Hourly cap (USD)", "Optional: per clock hour.", required=False)

    class Meta:
        model = Budget
        fields = ["thresholds", "on_exceed", "fallback_models"]
        help_texts = {
            "thresholds": "Alert at these percents of the monthly cap, comma-separated (e.g. 50,80,100).",
            "fallback_models": "With on_exceed = fallback: cheaper models to try instead, comma-separated, "
            "in order.",
        }

    def __init__(self, *args, instance: Budget | None = None, initial=None, **kwargs):
        if instance is not None and instance.pk is not None:
            initial = {
                "monthly_cap_usd": micros_to_usd(instance.monthly_cap_micros),
                "hourly_cap_usd": None
                if instance.hourly_cap_micros is None
                else micros_to_usd(instance.hourly_cap_micros),
                **(initial or {}),
            }
        super().__init__(*args, instance=instance, initial=initial, **kwargs)

    def budget_settings(self) -> dict:
        data = self.cleaned_data
        hourly = data.get("hourly_cap_usd")
        return {
            "monthly_cap_micros": usd_to_micros(data["monthly_cap_usd"]),
            "hourly_cap_micros": None if hourly is None else usd_to_micros(hourly),
            "thresholds": data["thresholds"],
            "on_exceed": data["on_exceed"],
            "fallback_models": data["fallback_models"],
        }

    def clean(self):
        cleaned = super().clean()
        if not self.errors and (problem := check_budget(**self.budget_settings())):
            raise forms.ValidationError(f"Invalid budget: {problem}.")
        return cleaned


def spend_context(request) -> dict:
    """The inspected tenant's budget bars and this month's chart; nothing without a tenant
    (there would be nothing to read, and the page says why)."""
    if getattr(request, "inspected_tenant", None) is None:
        return {}
    return {"budget_bars": charts.budget_bars(), "spend_chart": charts.current_month_chart()}


EDIT_FIELDS = ["monthly_cap_usd", "hourly_cap_usd", "thresholds", "on_exceed", "fallback_models"]
SHOW_FIELDS = ["monthly_cap", "hourly_cap", "alert_thresholds", "on_exceed", "fallback", "updated_at"]


@admin.register(Budget)
class BudgetAdmin(TenantScopedAdmin):
    form = BudgetForm
    list_display = ["monthly_cap", "hourly_cap", "alert_thresholds", "on_exceed", "fallback", "updated_at"]
    list_display_links = ["monthly_cap"]
    # No bulk "delete selected": it deletes rows directly, around remove_budget. The budget's
    # own Delete button goes through delete_model below.
    actions = None

    # Money and policy: superusers only, like the price catalogue; the view permission reads.
    def has_add_permission(self, request):
        return (
            request.user.is_superuser
            and getattr(request, "inspected_tenant", None) is not None
            and not Budget.objects.exists()  # one per tenant: change it instead
        )

    def has_change_permission(self, request, obj=None):
        return request.user.is_superuser

    def has_delete_permission(self, request, obj=None):
        return request.user.is_superuser

    def get_fields(self, request, obj=None):
        return EDIT_FIELDS if self.has_change_permission(request, obj) else SHOW_FIELDS

    def get_readonly_fields(self, request, obj=None):
        return [] if self.has_change_permission(request, obj) else SHOW_FIELDS

    def changelist_view(self, request, extra_context=None):
        return super().changelist_view(request, {**(extra_context or {}), **spend_context(request)})

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = {**(extra_context or {}), **spend_context(request)}
        return super().change_view(request, object_id, form_url, extra_context)

    def save_model(self, request, obj: Budget, form: BudgetForm, change):
        # Through the service, never the ModelForm's save: it also moves the cap of the periods
        # in progress. The form ran the same check just before.
        budget = set_budget(tenant_id=request.inspected_tenant.id, **form.budget_settings())
        obj.pk = budget.pk
        obj.refresh_from_db()  # what was stored, for the admin's log and its message
        obj._state.adding = False

    def delete_model(self, request, obj: Budget):
        remove_budget(tenant_id=obj.tenant_id)

    @admin.display(description="monthly cap", ordering="monthly_cap_micros")
    def monthly_cap(self, budget: Budget) -> str:
        return format_micros(budget.monthly_cap_micros)

    @admin.display(description="hourly cap", ordering="hourly_cap_micros")
    def hourly_cap(self, budget: Budget) -> str:
        return "none" if budget.hourly_cap_micros is None else format_micros(budget.hourly_cap_micros)

    @admin.display(description="alerts at")
    def alert_thresholds(self, budget: Budget) -> str:
        return ", ".join(f"{t}%" for t in sorted(budget.thresholds))

    @admin.display(description="fallback models")
    def fallback(self, budget: Budget) -> str:
        return " → ".join(budget.fallback_models) or "none"


@admin.register(BudgetDecision)
class BudgetDecisionAdmin(ReadOnlyAdmin, TenantScopedAdmin):
    list_display = [
        "created_at",
        "decision",
        "endpoint",
        "requested_model",
        "resolved_model",
        "estimate",
        "budget",
        "remaining",
        "cap",
        "reason",
        "request_id",
    ]
    list_filter = ["decision", "endpoint", "budget"]
    search_fields = ["request_id"]
    ordering = ["-created_at"]
    show_full_result_count = False  # an append-only table: no second count over all of it

    @admin.display(description="estimate", ordering="estimate_micros")
    def estimate(self, decision: BudgetDecision) -> str:
        return format_micros(decision.estimate_micros)

    @admin.display(description="remaining before", ordering="remaining_micros")
    def remaining(self, decision: BudgetDecision) -> str:
        return format_micros(decision.remaining_micros)

    @admin.display(description="cap", ordering="cap_micros")
    def cap(self, decision: BudgetDecision) -> str:
        return format_micros(decision.cap_micros)


DELIVERY_FIELDS = ["channel", "target", "status", "attempts", "last_error", "last_attempt_at", "delivered_at"]


class AlertDeliveryInline(admin.TabularInline):
    model = AlertDelivery
    fields = readonly_fields = DELIVERY_FIELDS
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(BudgetAlert)
class BudgetAlertAdmin(ReadOnlyAdmin, TenantScopedAdmin):
    list_display = ["created_at", "month", "threshold", "spent", "cap", "deliveries"]
    list_filter = ["threshold_percent"]
    ordering = ["-created_at", "-threshold_percent"]
    inlines = [AlertDeliveryInline]
    fields = ["month", "threshold", "spent", "cap", "created_at"]
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("deliveries")

    @admin.display(description="month", ordering="month_start")
    def month(self, alert: BudgetAlert) -> str:
        return f"{alert.month_start:%Y-%m}"

    @admin.display(description="threshold", ordering="threshold_percent")
    def threshold(self, alert: BudgetAlert) -> str:
        return f"{alert.threshold_percent}%"

    @admin.display(description="spent at the crossing", ordering="spent_micros")
    def spent(self, alert: BudgetAlert) -> str:
        return format_micros(alert.spent_micros)

    @admin.display(description="cap", ordering="cap_micros")
    def cap(self, alert: BudgetAlert) -> str:
        return format_micros(alert.cap_micros)

    @admin.display(description="deliveries")
    def deliveries(self, alert: BudgetAlert) -> str:
        rows = sorted(alert.deliveries.all(), key=lambda delivery: delivery.channel)
        if not rows:
            return "none (no email or webhook configured)"
        return format_html_join(
            "", "<div class='alert-delivery'>{}: {} ({}){}</div>", (delivery_summary(d) for d in rows)
        )


def delivery_summary(delivery: AlertDelivery) -> tuple[str, str, str, str]:
    attempts = f"{delivery.attempts} attempt{'' if delivery.attempts == 1 else 's'}"
    return (
        delivery.channel,
        delivery.status,
        attempts,
        f" - {delivery.last_error}" if delivery.last_error else "",
    )


@admin.register(AlertDelivery)
class AlertDeliveryAdmin(ReadOnlyAdmin, TenantScopedAdmin):
    list_display = ["alert", *DELIVERY_FIELDS]
    list_filter = ["status", "channel"]
    list_select_related = ["alert"]
    search_fields = ["target"]
    ordering = ["-alert__created_at", "channel"]


@admin.register(BudgetReservation)
class BudgetReservationAdmin(ReadOnlyAdmin, TenantScopedAdmin):
    list_display = [
        "created_at",
        "status",
        "endpoint",
        "model",
        "estimate",
        "actual",
        "month_start",
        "hour_start",
        "lease_expires_at",
        "finished_at",
        "request_id",
    ]
    list_filter = ["status", "endpoint"]
    search_fields = ["request_id"]
    ordering = ["-created_at"]
    show_full_result_count = False

    @admin.display(description="estimate (held)", ordering="estimate_micros")
    def estimate(self, reservation: BudgetReservation) -> str:
        return format_micros(reservation.estimate_micros)

    @admin.display(description="actual", ordering="actual_micros")
    def actual(self, reservation: BudgetReservation) -> str:
        return "" if reservation.actual_micros is None else format_micros(reservation.actual_micros)
