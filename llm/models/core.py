"""The tenant directory, the LLM calls, their months, and the jobs (the seed's tables)."""

from typing import ClassVar

from django.db import models
from django.db.models import Q
from django.db.models.functions import Now

from llm.models.fields import new_request_id, non_negative, tenant_fk, uuid_pk


class JobStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


class Tenant(models.Model):
    id = uuid_pk()
    name = models.TextField()
    api_key_hash = models.CharField(max_length=64, help_text="SHA-256 of the API key, hex.")
    notification_email = models.EmailField(blank=True, default="", help_text="Budget alerts go here.")
    # Budget alerts are also POSTed here, signed with HMAC-SHA256 under webhook_secret (shown
    # once when set: `manage.py configure_alerts`).
    webhook_url = models.URLField(blank=True, default="", db_default="", max_length=2000)
    webhook_secret = models.TextField(blank=True, default="", db_default="", editable=False)
    # Whether the tenant has a budget (kept with it by set_budget/remove_budget): one cheap
    # read outside any transaction tells a worker that a call needs no admission at all.
    budgeted = models.BooleanField(default=False, db_default=False, editable=False)
    created_at = models.DateTimeField(db_default=Now(), editable=False)
    updated_at = models.DateTimeField(db_default=Now(), editable=False)

    class Meta:
        db_table = "tenants"
        constraints = [
            models.CheckConstraint(condition=Q(name__regex=r"\S"), name="tenants_name_not_blank"),
            models.CheckConstraint(
                condition=Q(api_key_hash__regex=r"^[0-9a-f]{64}$"), name="tenants_api_key_hash_is_sha256"
            ),
            # A constraint rather than unique=True, which would add a useless LIKE index.
            models.UniqueConstraint(fields=["api_key_hash"], name="tenants_api_key_hash_uniq"),
        ]
        # Entering a tenant in the admin (llm.admin, StaffTenantMiddleware) needs this, granted
        # explicitly: being staff is not enough. Superusers have every permission.
        permissions = [("inspect_tenant", "Can inspect a tenant's LLM data")]

    def __str__(self) -> str:
        return self.name


class LLMApiCall(models.Model):
    """One audited LLM call. Append-only for the runtime role."""

    id = uuid_pk()
    tenant = tenant_fk("api_calls")
    created_at = models.DateTimeField(db_default=Now(), editable=False)
    endpoint = models.TextField()
    model = models.TextField()
    input_tokens = models.IntegerField()
    # Of the input tokens, those the provider served from its prompt cache (priced lower).
    cached_input_tokens = models.IntegerField(default=0, db_default=0)
    output_tokens = models.IntegerField()
    cost_micros = models.BigIntegerField(default=0, db_default=0)
    cost_cents = models.BigIntegerField(help_text="Derived: cost_micros in cents, rounded half up.")
    # The price row the cost was computed with; NULL only for calls recorded before prices.
    price = models.ForeignKey(
        "llm.ModelPrice", on_delete=models.PROTECT, null=True, blank=True, related_name="+", db_index=False
    )
    latency_ms = models.IntegerField()
    was_cached = models.BooleanField(default=False, db_default=False)
    request_id = models.TextField()
    # NULL, not '', for "no correlation id": it mirrors the seed system's column.
    correlation_id = models.TextField(null=True, blank=True)  # noqa: DJ001
    request_metadata = models.JSONField(null=True, blank=True)

    class Meta:
        db_table = "llm_api_calls"
        verbose_name = "LLM API call"
        constraints = [
            *non_negative(
                "llm_api_calls",
                "input_tokens",
                "cached_input_tokens",
                "output_tokens",
                "cost_micros",
                "cost_cents",
                "latency_ms",
            ),
            models.CheckConstraint(
                condition=Q(cached_input_tokens__lte=models.F("input_tokens")),
                name="llm_api_calls_cached_within_input",
            ),
            # Includes tenant_id: a retried task is recognised within its tenant, and the key
            # never reveals that another tenant used the same request_id.
            models.UniqueConstraint(
                fields=["tenant", "request_id", "endpoint"], name="llm_api_calls_tenant_request_endpoint_uniq"
            ),
        ]
        indexes = [
            models.Index(
                "tenant", "endpoint", models.F("created_at").desc(), name="llm_api_calls_tenant_endpoint"
            ),
            models.Index("tenant", models.F("created_at").desc(), name="llm_api_calls_tenant_created"),
        ]

    def __str__(self) -> str:
        return f"{self.endpoint} {self.model} {self.request_id}"


class LLMMonthlyCost(models.Model):
    """A tenant's LLM spend for one UTC month, kept by single-statement upserts."""

    id = uuid_pk()
    tenant = tenant_fk("monthly_costs")
    month = models.DateField(help_text="First day of the UTC month.")
    total_cost_micros = models.BigIntegerField(default=0, db_default=0)
    total_cost_cents = models.BigIntegerField(
        default=0, db_default=0, help_text="Derived: total_cost_micros in cents, rounded half up."
    )
    total_calls = models.IntegerField(default=0, db_default=0)
    model_breakdown = models.JSONField(
        default=dict, help_text='{"<model>": {"calls": n, "cost_micros": m, "cost_cents": c}}'
    )
    created_at = models.DateTimeField(db_default=Now(), editable=False)
    updated_at = models.DateTimeField(db_default=Now(), editable=False)

    class Meta:
        db_table = "llm_monthly_costs"
        verbose_name = "LLM monthly cost"
        constraints = [
            *non_negative("llm_monthly_costs", "total_cost_micros", "total_cost_cents", "total_calls"),
            models.CheckConstraint(condition=Q(month__day=1), name="llm_monthly_costs_month_first_day"),
            models.UniqueConstraint(fields=["tenant", "month"], name="llm_monthly_costs_tenant_month_uniq"),
        ]
        indexes = [
            models.Index("tenant", models.F("month").desc(), name="llm_monthly_costs_tenant_month"),
        ]

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.month:%Y-%m}"


class LLMJob(models.Model):
    """What investigations and budget optimization jobs share: a request that runs one LLM
    call and stores its outcome, pending -> running -> completed or failed."""

    id = uuid_pk()
    created_at = models.DateTimeField(db_default=Now(), editable=False)
    updated_at = models.DateTimeField(db_default=Now(), editable=False)
    request_id = models.TextField(default=new_request_id)
    status = models.TextField(
        choices=JobStatus.choices, default=JobStatus.PENDING, db_default=JobStatus.PENDING
    )
    cost_micros = models.BigIntegerField(default=0, db_default=0)
    cost_cents = models.BigIntegerField(default=0, db_default=0)

    # The JSON field holding the job's outcome, or {"error": reason} once it failed.
    result_field: ClassVar[str]

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{self._meta.verbose_name} {self.id} ({self.status})"


def _job_constraints(table: str) -> list[models.BaseConstraint]:
    return [
        *non_negative(table, "cost_micros", "cost_cents"),
        models.CheckConstraint(condition=Q(status__in=JobStatus.values), name=f"{table}_status_valid"),
        models.CheckConstraint(condition=Q(request_id__regex=r"\S"), name=f"{table}_request_id_not_blank"),
        models.UniqueConstraint(fields=["tenant", "request_id"], name=f"{table}_tenant_request_uniq"),
    ]


def _job_status_index(name: str) -> models.Index:
    return models.Index("tenant", "status", models.F("created_at").desc(), name=name)


class Investigation(LLMJob):
    """A bounded analyst-agent investigation answering one question."""

    tenant = tenant_fk("investigations")
    query = models.TextField()
    result = models.JSONField(null=True, blank=True)

    result_field = "result"

    class Meta:
        db_table = "investigations"
        constraints = _job_constraints("investigations")
        indexes = [_job_status_index("investigations_tenant_status")]


class BudgetOptimizationJob(LLMJob):
    """A deterministic budget allocation with an LLM-written synthesis."""

    tenant = tenant_fk("budget_optimization_jobs")
    recommendations = models.JSONField(null=True, blank=True)

    result_field = "recommendations"

    class Meta:
        db_table = "budget_optimization_jobs"
        constraints = _job_constraints("budget_optimization_jobs")
        indexes = [_job_status_index("budget_jobs_tenant_status")]
