"""The Django admin, for inspection. Staff choose the tenant they inspect (kept in the
session); `skeldir.tenancy.StaffTenantMiddleware` then runs every admin page inside that
tenant's context, so row-level security shows them that tenant's rows and nobody else's."""

from django.contrib import admin, messages
from django.db.models.functions import Now
from django.http import HttpRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django_celery_results.models import GroupResult, TaskResult

from llm.middleware import INSPECTED_TENANT_SESSION_KEY
from llm.models import BudgetOptimizationJob, Investigation, LLMApiCall, LLMMonthlyCost, Tenant
from llm.money import format_micros
from llm.services import create_tenant

NO_TENANT_SUBTITLE = (
    "No tenant chosen: this table shows nothing until you choose a tenant to inspect (Tenants page)."
)


class TenantScopedAdmin(admin.ModelAdmin):
    """A table sealed by RLS: say why it is empty when no tenant is being inspected."""

    def changelist_view(self, request: HttpRequest, extra_context=None):
        if getattr(request, "inspected_tenant", None) is None:
            extra_context = {**(extra_context or {}), "subtitle": NO_TENANT_SUBTITLE}
        return super().changelist_view(request, extra_context)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Audit data: viewable, never added, changed or deleted from the admin."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ["name", "inspect", "id", "notification_email", "created_at"]
    search_fields = ["name", "id"]
    fields = ["name", "notification_email"]
    readonly_fields = ["id", "created_at"]

    def has_change_permission(self, request, obj=None):
        return False  # the runtime role may only read and insert tenants

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="Inspect")
    def inspect(self, tenant: Tenant) -> str:
        url = reverse("admin:llm_inspect_tenant", args=[tenant.id])
        return format_html("<a class='inspect-tenant' href='{}'>Inspect</a>", url)

    def save_model(self, request, obj: Tenant, form, change):
        tenant, api_key = create_tenant(name=obj.name, notification_email=obj.notification_email)
        obj.pk, obj.api_key_hash, obj.created_at = tenant.pk, tenant.api_key_hash, tenant.created_at
        obj._state.adding = False
        messages.warning(
            request, f"API key for {tenant.name}, shown only now (it is stored only as a hash): {api_key}"
        )

    def get_urls(self):
        return [
            path(
                "<uuid:tenant_id>/inspect/",
                self.admin_site.admin_view(self.inspect_view),
                name="llm_inspect_tenant",
            ),
            path(
                "stop-inspecting/",
                self.admin_site.admin_view(self.stop_inspecting_view),
                name="llm_stop_inspecting",
            ),
            *super().get_urls(),
        ]

    def inspect_view(self, request, tenant_id):
        tenant = get_object_or_404(Tenant, id=tenant_id)
        request.session[INSPECTED_TENANT_SESSION_KEY] = str(tenant.id)
        messages.success(request, f"Now inspecting {tenant.name}: tenant tables show its rows only.")
        return HttpResponseRedirect(reverse("admin:index"))

    def stop_inspecting_view(self, request):
        request.session.pop(INSPECTED_TENANT_SESSION_KEY, None)
        messages.info(request, "No tenant chosen: tenant tables show nothing.")
        return HttpResponseRedirect(reverse("admin:llm_tenant_changelist"))


class MonthFilter(admin.SimpleListFilter):
    title = "month"
    parameter_name = "month"

    def lookups(self, request, model_admin):
        months = (
            model_admin.get_queryset(request).order_by("-month").values_list("month", flat=True).distinct()
        )
        return [(m.isoformat(), m.strftime("%Y-%m")) for m in months]

    def queryset(self, request, queryset):
        return queryset.filter(month=self.value()) if self.value() else queryset


def breakdown_table(breakdown: dict) -> str:
    rows = format_html_join(
        "",
        "<tr><td>{}</td><td style='text-align:right'>{}</td><td style='text-align:right'>{}</td></tr>",
        (
            (model, entry["calls"], format_micros(entry.get("cost_micros", 0)))
            for model, entry in sorted(breakdown.items())
        ),
    )
    return format_html(
        "<table class='model-breakdown'><thead><tr><th>model</th><th>calls</th><th>cost</th></tr></thead>"
        "<tbody>{}</tbody></table>",
        rows,
    )


@admin.register(LLMMonthlyCost)
class LLMMonthlyCostAdmin(ReadOnlyAdmin, TenantScopedAdmin):
    list_display = ["month", "total_calls", "total_cost", "breakdown", "updated_at"]
    list_filter = [MonthFilter]
    ordering = ["-month"]
    fields = ["tenant", "month", "total_calls", "total_cost", "breakdown", "created_at", "updated_at"]
    readonly_fields = fields

    @admin.display(description="total cost", ordering="total_cost_micros")
    def total_cost(self, row: LLMMonthlyCost) -> str:
        return format_micros(row.total_cost_micros)

    @admin.display(description="model breakdown")
    def breakdown(self, row: LLMMonthlyCost) -> str:
        return breakdown_table(row.model_breakdown)


@admin.register(LLMApiCall)
class LLMApiCallAdmin(ReadOnlyAdmin, TenantScopedAdmin):
    list_display = [
        "created_at",
        "endpoint",
        "model",
        "input_tokens",
        "output_tokens",
        "cost",
        "latency_ms",
        "request_id",
    ]
    list_filter = ["endpoint", "model", "was_cached"]
    search_fields = ["request_id", "correlation_id"]
    ordering = ["-created_at"]
    show_full_result_count = False

    @admin.display(description="cost", ordering="cost_micros")
    def cost(self, call: LLMApiCall) -> str:
        return format_micros(call.cost_micros)


class JobAdmin(TenantScopedAdmin):
    """Jobs are inspected; staff may only change a job's status (e.g. fail a stuck one)."""

    list_filter = ["status"]
    search_fields = ["request_id", "id"]
    ordering = ["-created_at"]

    def has_add_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields if f.name != "status"]

    def save_model(self, request, obj, form, change):
        # Only the status, by primary key: never Django's UPDATE-then-INSERT on a hidden row.
        obj.updated_at = Now()
        obj.save(update_fields=["status", "updated_at"])
        obj.refresh_from_db(fields=["updated_at"])


@admin.register(Investigation)
class InvestigationAdmin(JobAdmin):
    list_display = ["created_at", "status", "query", "cost", "request_id"]

    @admin.display(description="cost", ordering="cost_micros")
    def cost(self, job: Investigation) -> str:
        return format_micros(job.cost_micros)


@admin.register(BudgetOptimizationJob)
class BudgetOptimizationJobAdmin(JobAdmin):
    list_display = ["created_at", "status", "cost", "request_id"]

    @admin.display(description="cost", ordering="cost_micros")
    def cost(self, job: BudgetOptimizationJob) -> str:
        return format_micros(job.cost_micros)


admin.site.site_header = "Skeldir LLM platform"
admin.site.site_title = "Skeldir LLM admin"
admin.site.index_title = "Inspection"

# Celery's task results are not tenant-sealed (they are not RLS tables): keep them out of the
# admin, where staff see one tenant at a time.
for _model in (TaskResult, GroupResult):
    if admin.site.is_registered(_model):
        admin.site.unregister(_model)
