import uuid

import django.contrib.postgres.functions
import django.db.models.deletion
import django.db.models.functions.datetime
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = []

    operations = [
        migrations.CreateModel(
            name="Tenant",
            fields=[
                (
                    "id",
                    models.UUIDField(
                        db_default=django.contrib.postgres.functions.RandomUUID(),
                        default=uuid.uuid4,
                        editable=False,
                        primary_key=True,
                        serialize=False,
                    ),
                ),
                ("name", models.TextField()),
                ("api_key_hash", models.CharField(help_text="SHA-256 of the API key, hex.", max_length=64)),
                ("notification_email", models.EmailField(blank=True, default="", max_length=254)),
                (
                    "created_at",
                    models.DateTimeField(
                        db_default=django.db.models.functions.datetime.Now(), editable=False
                    ),
                ),
                (
                    "updated_at",
                    models.DateTimeField(
                        db_default=django.db.models.functions.datetime.Now(), editable=False
                    ),
                ),
            ],
            options={
                "db_table": "tenants",
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(("name__regex", "\\S")), name="tenants_name_not_blank"
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("api_key_hash__regex", "^[0-9a-f]{64}$")),
                        name="tenants_api_key_hash_is_sha256",
                    ),
                    models.UniqueConstraint(fields=("api_key_hash",), name="tenants_api_key_hash_uniq"),
                ],
            },
        ),
        migrations.CreateModel(
            name="LLMMonthlyCost",
            fields=[
                (
                    "id",
                    models.UUIDField(
                        db_default=django.contrib.postgres.functions.RandomUUID(),
                        default=uuid.uuid4,
                        editable=False,
                        primary_key=True,
                        serialize=False,
                    ),
                ),
                ("month", models.DateField(help_text="First day of the UTC month.")),
                ("total_cost_cents", models.BigIntegerField(db_default=0, default=0)),
                ("total_calls", models.IntegerField(db_default=0, default=0)),
                (
                    "model_breakdown",
                    models.JSONField(default=dict, help_text='{"<model>": {"calls": n, "cost_cents": c}}'),
                ),
                (
                    "created_at",
                    models.DateTimeField(
                        db_default=django.db.models.functions.datetime.Now(), editable=False
                    ),
                ),
                (
                    "updated_at",
                    models.DateTimeField(
                        db_default=django.db.models.functions.datetime.Now(), editable=False
                    ),
                ),
                (
                    "tenant",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="monthly_costs",
                        to="llm.tenant",
                    ),
                ),
            ],
            options={
                "verbose_name": "LLM monthly cost",
                "db_table": "llm_monthly_costs",
                "indexes": [
                    models.Index(
                        models.F("tenant"),
                        models.OrderBy(models.F("month"), descending=True),
                        name="llm_monthly_costs_tenant_month",
                    )
                ],
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(("total_cost_cents__gte", 0)),
                        name="llm_monthly_costs_total_cost_cents_non_negative",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("total_calls__gte", 0)),
                        name="llm_monthly_costs_total_calls_non_negative",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("month__day", 1)), name="llm_monthly_costs_month_first_day"
                    ),
                    models.UniqueConstraint(
                        fields=("tenant", "month"), name="llm_monthly_costs_tenant_month_uniq"
                    ),
                ],
            },
        ),
        migrations.CreateModel(
            name="LLMApiCall",
            fields=[
                (
                    "id",
                    models.UUIDField(
                        db_default=django.contrib.postgres.functions.RandomUUID(),
                        default=uuid.uuid4,
                        editable=False,
                        primary_key=True,
                        serialize=False,
                    ),
                ),
                (
                    "created_at",
                    models.DateTimeField(
                        db_default=django.db.models.functions.datetime.Now(), editable=False
                    ),
                ),
                ("endpoint", models.TextField()),
                ("model", models.TextField()),
                ("input_tokens", models.IntegerField()),
                ("output_tokens", models.IntegerField()),
                ("cost_cents", models.BigIntegerField()),
                ("latency_ms", models.IntegerField()),
                ("was_cached", models.BooleanField(db_default=False, default=False)),
                ("request_id", models.TextField()),
                ("correlation_id", models.TextField(blank=True, null=True)),
                ("request_metadata", models.JSONField(blank=True, null=True)),
                (
                    "tenant",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="api_calls",
                        to="llm.tenant",
                    ),
                ),
            ],
            options={
                "verbose_name": "LLM API call",
                "db_table": "llm_api_calls",
                "indexes": [
                    models.Index(
                        models.F("tenant"),
                        models.F("endpoint"),
                        models.OrderBy(models.F("created_at"), descending=True),
                        name="llm_api_calls_tenant_endpoint",
                    ),
                    models.Index(
                        models.F("tenant"),
                        models.OrderBy(models.F("created_at"), descending=True),
                        name="llm_api_calls_tenant_created",
                    ),
                ],
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(("input_tokens__gte", 0)),
                        name="llm_api_calls_input_tokens_non_negative",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("output_tokens__gte", 0)),
                        name="llm_api_calls_output_tokens_non_negative",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("cost_cents__gte", 0)),
                        name="llm_api_calls_cost_cents_non_negative",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("latency_ms__gte", 0)),
                        name="llm_api_calls_latency_ms_non_negative",
                    ),
                    models.UniqueConstraint(
                        fields=("tenant", "request_id", "endpoint"),
                        name="llm_api_calls_tenant_request_endpoint_uniq",
                    ),
                ],
            },
        ),
        migrations.CreateModel(
            name="Investigation",
            fields=[
                (
                    "id",
                    models.UUIDField(
                        db_default=django.contrib.postgres.functions.RandomUUID(),
                        default=uuid.uuid4,
                        editable=False,
                        primary_key=True,
                        serialize=False,
                    ),
                ),
                (
                    "created_at",
                    models.DateTimeField(
                        db_default=django.db.models.functions.datetime.Now(), editable=False
                    ),
                ),
                (
                    "updated_at",
                    models.DateTimeField(
                        db_default=django.db.models.functions.datetime.Now(), editable=False
                    ),
                ),
                ("request_id", models.TextField()),
                ("query", models.TextField()),
                (
                    "status",
                    models.TextField(
                        choices=[
                            ("pending", "Pending"),
                            ("running", "Running"),
                            ("completed", "Completed"),
                            ("failed", "Failed"),
                        ],
                        db_default="pending",
                        default="pending",
                    ),
                ),
                ("result", models.JSONField(blank=True, null=True)),
                ("cost_cents", models.BigIntegerField(db_default=0, default=0)),
                (
                    "tenant",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="investigations",
                        to="llm.tenant",
                    ),
                ),
            ],
            options={
                "db_table": "investigations",
                "indexes": [
                    models.Index(
                        models.F("tenant"),
                        models.F("status"),
                        models.OrderBy(models.F("created_at"), descending=True),
                        name="investigations_tenant_status",
                    )
                ],
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(("cost_cents__gte", 0)),
                        name="investigations_cost_cents_non_negative",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("status__in", ["pending", "running", "completed", "failed"])),
                        name="investigations_status_valid",
                    ),
                    models.UniqueConstraint(
                        fields=("tenant", "request_id"), name="investigations_tenant_request_uniq"
                    ),
                ],
            },
        ),
        migrations.CreateModel(
            name="BudgetOptimizationJob",
            fields=[
                (
                    "id",
                    models.UUIDField(
                        db_default=django.contrib.postgres.functions.RandomUUID(),
                        default=uuid.uuid4,
                        editable=False,
                        primary_key=True,
                        serialize=False,
                    ),
                ),
                (
                    "created_at",
                    models.DateTimeField(
                        db_default=django.db.models.functions.datetime.Now(), editable=False
                    ),
                ),
                (
                    "updated_at",
                    models.DateTimeField(
                        db_default=django.db.models.functions.datetime.Now(), editable=False
                    ),
                ),
                ("request_id", models.TextField()),
                (
                    "status",
                    models.TextField(
                        choices=[
                            ("pending", "Pending"),
                            ("running", "Running"),
                            ("completed", "Completed"),
                            ("failed", "Failed"),
                        ],
                        db_default="pending",
                        default="pending",
                    ),
                ),
                ("recommendations", models.JSONField(blank=True, null=True)),
                ("cost_cents", models.BigIntegerField(db_default=0, default=0)),
                (
                    "tenant",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="budget_optimization_jobs",
                        to="llm.tenant",
                    ),
                ),
            ],
            options={
                "db_table": "budget_optimization_jobs",
                "indexes": [
                    models.Index(
                        models.F("tenant"),
                        models.F("status"),
                        models.OrderBy(models.F("created_at"), descending=True),
                        name="budget_jobs_tenant_status",
                    )
                ],
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(("cost_cents__gte", 0)),
                        name="budget_optimization_jobs_cost_cents_non_negative",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("status__in", ["pending", "running", "completed", "failed"])),
                        name="budget_optimization_jobs_status_valid",
                    ),
                    models.UniqueConstraint(
                        fields=("tenant", "request_id"), name="budget_optimization_jobs_tenant_request_uniq"
                    ),
                ],
            },
        ),
    ]
