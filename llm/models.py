"""The tenant directory, the global price catalogue and the tenant-sealed LLM tables (see
DESIGN.md, "Schema").

Ids are UUIDs generated in Python and, as a column default, by the database. Timestamps come
from the database clock (`db_default=Now()`), since the monthly cost row is keyed on the
UTC month of the call's database time. Money is integer micro-USD (`*_micros`, 10^-6 USD);
the seed's `*_cents` columns are derived from it (llm/money.py).
"""

import uuid
from typing import ClassVar

from django.contrib.postgres.constraints import ExclusionConstraint
from django.contrib.postgres.fields import RangeBoundary, RangeOperators
from django.contrib.postgres.functions import RandomUUID
from django.db import models
from django.db.models import Func, Q
from django.db.models.functions import Now

from llm.money import MAX_REQUEST_FEE_MICROS, MAX_TOKEN_PRICE_MICROS


def _uuid_pk() -> models.UUIDField:
    return models.UUIDField(primary_key=True, default=uuid.uuid4, db_default=RandomUUID(), editable=False)


def _tenant_fk(related_name: str) -> models.ForeignKey:
    # db_index=False: every table's composite indexes lead with tenant_id already.
    # The database-level ON DELETE CASCADE is added in migration 0001 (Django 5.2 cannot say it).
    return models.ForeignKey(
        "llm.Tenant", on_delete=models.CASCADE, related_name=related_name, db_index=False
    )


def _non_negative(table: str, *fields: str) -> list[models.CheckConstraint]:
    return [
        models.CheckConstraint(condition=Q(**{f"{field}__gte": 0}), name=f"{table}_{field}_non_negative")
        for field in fields
    ]


def new_request_id() -> str:
    """A job created without a client's request_id (the ORM, the admin) still gets a unique one."""
    return str(uuid.uuid4())


class JobStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


class Tenant(models.Model):
    id = _uuid_pk()
    name = models.TextField()
    api_key_hash = models.CharField(max_length=64, help_text="SHA-256 of the API key, hex.")
    notification_email = models.EmailField(blank=True, default="")
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


class TsTzRange(Func):
    function = "TSTZRANGE"
    output_field = models.DateTimeField()  # only ever compared with &&, never read


class ModelPrice(models.Model):
    """What one model costs during one period: per million input, cached-input and output
    tokens, plus a per-request fee, in micro-USD. Global (not tenant-sealed); the runtime role
    may only read it. A call stores the id of the row it was priced with, so a later price
    never reprices history."""

    id = _uuid_pk()
    model = models.TextField()
    provider = models.TextField()
    input_micros_per_mtok = models.BigIntegerField(help_text="µUSD per million input tokens.")
    cached_input_micros_per_mtok = models.BigIntegerField(help_text="µUSD per million cached input tokens.")
    output_micros_per_mtok = models.BigIntegerField(help_text="µUSD per million output tokens.")
    request_fee_micros = models.BigIntegerField(default=0, db_default=0, help_text="µUSD per request.")
    valid_from = models.DateTimeField(help_text="In force from (inclusive).")
    valid_to = models.DateTimeField(
        null=True, blank=True, help_text="In force until (exclusive); open if empty."
    )
    created_at = models.DateTimeField(db_default=Now(), editable=False)

    class Meta:
        db_table = "llm_model_prices"
        verbose_name = "model price"
        constraints = [
            models.CheckConstraint(
                condition=Q(model__regex=r"^\S+$"), name="llm_model_prices_model_is_a_name"
            ),
            models.CheckConstraint(
                condition=Q(provider__regex=r"\S"), name="llm_model_prices_provider_not_blank"
            ),
            *(
                models.CheckConstraint(
                    condition=Q(**{f"{field}__gte": 0, f"{field}__lte": MAX_TOKEN_PRICE_MICROS}),
                    name=f"llm_model_prices_{field}_in_range",
                )
                for field in (
                    "input_micros_per_mtok",
                    "cached_input_micros_per_mtok",
                    "output_micros_per_mtok",
                )
            ),
            models.CheckConstraint(
                condition=Q(request_fee_micros__gte=0, request_fee_micros__lte=MAX_REQUEST_FEE_MICROS),
                name="llm_model_prices_request_fee_micros_in_range",
            ),
            # A cached token is a discounted input token, never dearer: it is billed once, at this price.
            models.CheckConstraint(
                condition=Q(cached_input_micros_per_mtok__lte=models.F("input_micros_per_mtok")),
                name="llm_model_prices_cached_not_above_input",
            ),
            models.CheckConstraint(
                condition=Q(valid_to__isnull=True) | Q(valid_to__gt=models.F("valid_from")),
                name="llm_model_prices_period_not_empty",
            ),
            # One price per model at any instant (needs btree_gist for the text equality).
            ExclusionConstraint(
                name="llm_model_prices_no_overlap",
                expressions=[
                    ("model", RangeOperators.EQUAL),
                    (TsTzRange("valid_from", "valid_to", RangeBoundary()), RangeOperators.OVERLAPS),
                ],
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model} from {self.valid_from:%Y-%m-%d %H:%M}"


class LLMApiCall(models.Model):
    """One audited LLM call. Append-only for the runtime role."""

    id = _uuid_pk()
    tenant = _tenant_fk("api_calls")
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
        ModelPrice, on_delete=models.PROTECT, null=True, blank=True, related_name="+", db_index=False
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
            *_non_negative(
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

    id = _uuid_pk()
    tenant = _tenant_fk("monthly_costs")
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
            *_non_negative("llm_monthly_costs", "total_cost_micros", "total_cost_cents", "total_calls"),
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

    id = _uuid_pk()
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
        *_non_negative(table, "cost_micros", "cost_cents"),
        models.CheckConstraint(condition=Q(status__in=JobStatus.values), name=f"{table}_status_valid"),
        models.CheckConstraint(condition=Q(request_id__regex=r"\S"), name=f"{table}_request_id_not_blank"),
        models.UniqueConstraint(fields=["tenant", "request_id"], name=f"{table}_tenant_request_uniq"),
    ]


def _job_status_index(name: str) -> models.Index:
    return models.Index("tenant", "status", models.F("created_at").desc(), name=name)


class Investigation(LLMJob):
    """A bounded analyst-agent investigation answering one question."""

    tenant = _tenant_fk("investigations")
    query = models.TextField()
    result = models.JSONField(null=True, blank=True)

    result_field = "result"

    class Meta:
        db_table = "investigations"
        constraints = _job_constraints("investigations")
        indexes = [_job_status_index("investigations_tenant_status")]


class BudgetOptimizationJob(LLMJob):
    """A deterministic budget allocation with an LLM-written synthesis."""

    tenant = _tenant_fk("budget_optimization_jobs")
    recommendations = models.JSONField(null=True, blank=True)

    result_field = "recommendations"

    class Meta:
        db_table = "budget_optimization_jobs"
        constraints = _job_constraints("budget_optimization_jobs")
        indexes = [_job_status_index("budget_jobs_tenant_status")]
