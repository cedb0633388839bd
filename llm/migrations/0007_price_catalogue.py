"""The price catalogue, and costs in micro-USD.

Besides the schema: btree_gist (for the no-overlap constraint on a model's price periods),
the runtime role's read-only grant on the catalogue, the stub models' prices (so the stub
workers keep working), and the µUSD figures of rows recorded before, from their cents.
"""

import uuid

import django.contrib.postgres.constraints
import django.contrib.postgres.fields.ranges
import django.contrib.postgres.functions
import django.db.models.deletion
import django.db.models.functions.datetime
from django.contrib.postgres.operations import BtreeGistExtension
from django.db import migrations, models

import llm.models
from llm.migrations._runtime_role import runtime_role

STUB_PRICES = [
    # model, µUSD per million input, cached input and output tokens
    ("stub-small", 150_000, 75_000, 600_000),
    ("stub-medium", 2_500_000, 1_250_000, 10_000_000),
    ("stub-large", 15_000_000, 7_500_000, 75_000_000),
]
STUB_PRICES_FROM = "2026-01-01T00:00:00+00:00"


def grant_read_and_seed_prices(apps, schema_editor):
    schema_editor.execute(f"GRANT SELECT ON llm_model_prices TO {runtime_role(schema_editor)}")
    for model, input_price, cached_price, output_price in STUB_PRICES:
        schema_editor.execute(
            "INSERT INTO llm_model_prices (model, provider, input_micros_per_mtok,"
            " cached_input_micros_per_mtok, output_micros_per_mtok, valid_from)"
            " VALUES (%s, 'stub', %s, %s, %s, %s)",
            [model, input_price, cached_price, output_price, STUB_PRICES_FROM],
        )


def revoke_read(apps, schema_editor):
    schema_editor.execute(f"REVOKE ALL ON llm_model_prices FROM {runtime_role(schema_editor)}")


# Rows recorded in cents before: their exact µUSD is their cents. FORCE ROW LEVEL SECURITY
# binds the owner too, so it is lifted for the backfill, inside this migration's transaction.
BACKFILL_MICROS = """
ALTER TABLE llm_api_calls NO FORCE ROW LEVEL SECURITY;
ALTER TABLE llm_monthly_costs NO FORCE ROW LEVEL SECURITY;
ALTER TABLE investigations NO FORCE ROW LEVEL SECURITY;
ALTER TABLE budget_optimization_jobs NO FORCE ROW LEVEL SECURITY;
UPDATE llm_api_calls SET cost_micros = cost_cents * 10000 WHERE price_id IS NULL;
UPDATE investigations SET cost_micros = cost_cents * 10000;
UPDATE budget_optimization_jobs SET cost_micros = cost_cents * 10000;
UPDATE llm_monthly_costs SET
    total_cost_micros = total_cost_cents * 10000,
    model_breakdown = (
        SELECT coalesce(jsonb_object_agg(key, value || jsonb_build_object(
                   'cost_micros', (value ->> 'cost_cents')::bigint * 10000)), '{}'::jsonb)
          FROM jsonb_each(model_breakdown));
ALTER TABLE llm_api_calls FORCE ROW LEVEL SECURITY;
ALTER TABLE llm_monthly_costs FORCE ROW LEVEL SECURITY;
ALTER TABLE investigations FORCE ROW LEVEL SECURITY;
ALTER TABLE budget_optimization_jobs FORCE ROW LEVEL SECURITY;
"""


class Migration(migrations.Migration):
    dependencies = [
        ("llm", "0006_revoke_temporary"),
    ]

    operations = [
        BtreeGistExtension(),
        migrations.CreateModel(
            name="ModelPrice",
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
                ("model", models.TextField()),
                ("provider", models.TextField()),
                ("input_micros_per_mtok", models.BigIntegerField(help_text="µUSD per million input tokens.")),
                (
                    "cached_input_micros_per_mtok",
                    models.BigIntegerField(help_text="µUSD per million cached input tokens."),
                ),
                (
                    "output_micros_per_mtok",
                    models.BigIntegerField(help_text="µUSD per million output tokens."),
                ),
                (
                    "request_fee_micros",
                    models.BigIntegerField(db_default=0, default=0, help_text="µUSD per request."),
                ),
                ("valid_from", models.DateTimeField(help_text="In force from (inclusive).")),
                (
                    "valid_to",
                    models.DateTimeField(
                        blank=True, help_text="In force until (exclusive); open if empty.", null=True
                    ),
                ),
                (
                    "created_at",
                    models.DateTimeField(
                        db_default=django.db.models.functions.datetime.Now(), editable=False
                    ),
                ),
            ],
            options={
                "verbose_name": "model price",
                "db_table": "llm_model_prices",
            },
        ),
        migrations.AddField(
            model_name="budgetoptimizationjob",
            name="cost_micros",
            field=models.BigIntegerField(db_default=0, default=0),
        ),
        migrations.AddField(
            model_name="investigation",
            name="cost_micros",
            field=models.BigIntegerField(db_default=0, default=0),
        ),
        migrations.AddField(
            model_name="llmapicall",
            name="cached_input_tokens",
            field=models.IntegerField(db_default=0, default=0),
        ),
        migrations.AddField(
            model_name="llmapicall",
            name="cost_micros",
            field=models.BigIntegerField(db_default=0, default=0),
        ),
        migrations.AddField(
            model_name="llmmonthlycost",
            name="total_cost_micros",
            field=models.BigIntegerField(db_default=0, default=0),
        ),
        migrations.AlterField(
            model_name="llmapicall",
            name="cost_cents",
            field=models.BigIntegerField(help_text="Derived: cost_micros in cents, rounded half up."),
        ),
        migrations.AlterField(
            model_name="llmmonthlycost",
            name="model_breakdown",
            field=models.JSONField(
                default=dict, help_text='{"<model>": {"calls": n, "cost_micros": m, "cost_cents": c}}'
            ),
        ),
        migrations.AlterField(
            model_name="llmmonthlycost",
            name="total_cost_cents",
            field=models.BigIntegerField(
                db_default=0, default=0, help_text="Derived: total_cost_micros in cents, rounded half up."
            ),
        ),
        migrations.AddConstraint(
            model_name="budgetoptimizationjob",
            constraint=models.CheckConstraint(
                condition=models.Q(("cost_micros__gte", 0)),
                name="budget_optimization_jobs_cost_micros_non_negative",
            ),
        ),
        migrations.AddConstraint(
            model_name="investigation",
            constraint=models.CheckConstraint(
                condition=models.Q(("cost_micros__gte", 0)), name="investigations_cost_micros_non_negative"
            ),
        ),
        migrations.AddConstraint(
            model_name="llmmonthlycost",
            constraint=models.CheckConstraint(
                condition=models.Q(("total_cost_micros__gte", 0)),
                name="llm_monthly_costs_total_cost_micros_non_negative",
            ),
        ),
        migrations.AddConstraint(
            model_name="modelprice",
            constraint=models.CheckConstraint(
                condition=models.Q(("model__regex", "^\\S+$")), name="llm_model_prices_model_is_a_name"
            ),
        ),
        migrations.AddConstraint(
            model_name="modelprice",
            constraint=models.CheckConstraint(
                condition=models.Q(("provider__regex", "\\S")), name="llm_model_prices_provider_not_blank"
            ),
        ),
        migrations.AddConstraint(
            model_name="modelprice",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("input_micros_per_mtok__gte", 0), ("input_micros_per_mtok__lte", 1000000000)
                ),
                name="llm_model_prices_input_micros_per_mtok_in_range",
            ),
        ),
        migrations.AddConstraint(
            model_name="modelprice",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("cached_input_micros_per_mtok__gte", 0),
                    ("cached_input_micros_per_mtok__lte", 1000000000),
                ),
                name="llm_model_prices_cached_input_micros_per_mtok_in_range",
            ),
        ),
        migrations.AddConstraint(
            model_name="modelprice",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("output_micros_per_mtok__gte", 0), ("output_micros_per_mtok__lte", 1000000000)
                ),
                name="llm_model_prices_output_micros_per_mtok_in_range",
            ),
        ),
        migrations.AddConstraint(
            model_name="modelprice",
            constraint=models.CheckConstraint(
                condition=models.Q(("request_fee_micros__gte", 0), ("request_fee_micros__lte", 10000000)),
                name="llm_model_prices_request_fee_micros_in_range",
            ),
        ),
        migrations.AddConstraint(
            model_name="modelprice",
            constraint=models.CheckConstraint(
                condition=models.Q(("cached_input_micros_per_mtok__lte", models.F("input_micros_per_mtok"))),
                name="llm_model_prices_cached_not_above_input",
            ),
        ),
        migrations.AddConstraint(
            model_name="modelprice",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("valid_to__isnull", True), ("valid_to__gt", models.F("valid_from")), _connector="OR"
                ),
                name="llm_model_prices_period_not_empty",
            ),
        ),
        migrations.AddConstraint(
            model_name="modelprice",
            constraint=django.contrib.postgres.constraints.ExclusionConstraint(
                expressions=[
                    ("model", "="),
                    (
                        llm.models.TsTzRange(
                            "valid_from", "valid_to", django.contrib.postgres.fields.ranges.RangeBoundary()
                        ),
                        "&&",
                    ),
                ],
                name="llm_model_prices_no_overlap",
            ),
        ),
        migrations.AddField(
            model_name="llmapicall",
            name="price",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="llm.modelprice",
            ),
        ),
        migrations.AddConstraint(
            model_name="llmapicall",
            constraint=models.CheckConstraint(
                condition=models.Q(("cached_input_tokens__gte", 0)),
                name="llm_api_calls_cached_input_tokens_non_negative",
            ),
        ),
        migrations.AddConstraint(
            model_name="llmapicall",
            constraint=models.CheckConstraint(
                condition=models.Q(("cost_micros__gte", 0)), name="llm_api_calls_cost_micros_non_negative"
            ),
        ),
        migrations.AddConstraint(
            model_name="llmapicall",
            constraint=models.CheckConstraint(
                condition=models.Q(("cached_input_tokens__lte", models.F("input_tokens"))),
                name="llm_api_calls_cached_within_input",
            ),
        ),
        migrations.RunPython(grant_read_and_seed_prices, revoke_read),
        migrations.RunSQL(BACKFILL_MICROS, migrations.RunSQL.noop),
    ]
