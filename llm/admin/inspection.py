"""The Django admin, for inspection. Staff holding the `llm.inspect_tenant` permission choose
the tenant they inspect (a POST, kept in the session); `llm.middleware.StaffTenantMiddleware`
then runs every admin page inside that tenant's context, so row-level security shows them
that tenant's rows and nobody else's."""

# django_celery_results registers its models in this module of its own; imported here, before
# this module takes them back at its end (see there).
import django_celery_results.admin  # noqa: F401
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models.functions import Now
from django.http import Http404, HttpRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.views.decorators.http import require_POST
from django_celery_results.models import GroupResult, TaskResult

from llm.admin import charts
from llm.middleware import INSPECT_TENANT_PERMISSION, INSPECTED_TENANT_SESSION_KEY
from llm.models import BudgetOptimizationJob, Investigation, LLMApiCall, LLMMonthlyCost, Tenant
from llm.money import format_micros
from llm.services import create_tenant
from skeldir.tenancy import parse_tenant_id

# The form the Inspect buttons of the Tenants list submit (admin/llm/tenant/change_list.html).
INSPECT_FORM_ID = "inspect-tenant-form"
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

    def get_list_display(self, request):
        if request.user.has_perm(INSPECT_TENANT_PERMISSION):
            return self.list_display
        return [column for column in self.list_display if column != "inspect"]

    @admin.display(description="Inspect")
    def inspect(self, tenant: Tenant) -> str:
        # Inspecting changes what the session acts on: a POST with the CSRF token, through the
        # form admin/llm/tenant/change_list.html puts above the list (this cell is inside the
        # changelist's own form, and forms cannot nest).
        url = reverse("admin:llm_inspect_tenant", args=[tenant.id])
        return format_html(
            "<button type='submit' class='button inspect-tenant' form='{}' formaction='{}'>Inspect</button>",
            INSPECT_FORM_ID,
            url,
        )

    def save_model(self, request, obj: Tenant, form, change):
        tenant, api_key = create_tenant(name=obj.name, notification_email=obj.notification_email)
        obj.pk, obj.api_key_hash, obj.created_at = tenant.pk, tenant.api_key_hash, tenant.created_at
        obj._state.adding = False
        messages.warning(
            request, f"API key for {tenant.name}, shown only now (it is stored only as a hash): {api_key}"
        )

    def get_urls(self):
        # POST only (GET answers 405), CSRF-checked by admin_view: a cross-site link or form
        # must not switch the tenant a signed-in staff member acts on.
        return [
            path(
                # Any string: an id that is not a UUID gets the same 403 as the others.
                "<str:tenant_id>/inspect/",
                self.admin_site.admin_view(require_POST(self.inspect_view)),
                name="llm_inspect_tenant",
            ),
            path(
                "stop-inspecting/",
                self.admin_site.admin_view(require_POST(self.stop_inspecting_view)),
                name="llm_stop_inspecting",
            ),
            *super().get_urls(),
        ]

    def inspect_view(self, request, tenant_id: str):
        # The permission first, so that without it every id gets the same answer (403):
        # existing, unknown or malformed, nothing tells which tenants exist.
        if not request.user.has_perm(INSPECT_TENANT_PERMISSION):
            raise PermissionDenied
        try:
            tenant_id = parse_tenant_id(tenant_id)
        except ValueError:
            raise Http404("No such tenant.") from None
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

    def changelist_view(self, request, extra_context=None):
        # This month's daily spend by model above the months (llm/admin/charts.py).
        if getattr(request, "inspected_tenant", None) is not None:
            extra_context = {**(extra_context or {}), "spend_chart": charts.current_month_chart()}
        return super().changelist_view(request, extra_context)

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
# admin, where staff see one tenant at a time. django_celery_results registers them when its
# admin module is imported; autodiscovery would import it only after this one (llm comes
# first in INSTALLED_APPS, so that its templates override the admin's), hence the import at
# the top. Unconditional: should they ever not be registered here, startup fails loudly
# rather than letting a later registration slip through.
admin.site.unregister([TaskResult, GroupResult])
