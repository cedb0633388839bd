"""The models and the database agree: columns, types, nullability, defaults, constraints, indexes."""

import pytest
from django.core.management import call_command
from django.db import connections, models

from llm.models import AlertDelivery, LLMApiCall, ModelPrice, Tenant
from llm.tests.factories import TENANT_MODELS as FACTORY_TENANT_MODELS

TENANT_MODELS = [*FACTORY_TENANT_MODELS, AlertDelivery]
ALL_MODELS = [Tenant, ModelPrice, *TENANT_MODELS]

pytestmark = pytest.mark.django_db


def test_makemigrations_finds_nothing_to_do():
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


def reflected_columns(table: str) -> dict[str, tuple[str, bool, str | None]]:
    with connections["owner"].cursor() as cursor:
        cursor.execute(
            """
            SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                   pg_get_expr(d.adbin, d.adrelid)
              FROM pg_attribute a
              LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
             WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
            """,
            [table],
        )
        return {name: (type_, not_null, default) for name, type_, not_null, default in cursor.fetchall()}


def expected_type(field: models.Field) -> str:
    db_type = field.db_type(connections["owner"])
    return db_type.replace("varchar", "character varying")


EXPECTED_DEFAULTS = {
    "id": "gen_random_uuid()",
    "created_at": "statement_timestamp()",
    "updated_at": "statement_timestamp()",
    "total_cost_cents": "0",
    "total_cost_micros": "0",
    "cost_micros": "0",
    "cached_input_tokens": "0",
    "request_fee_micros": "0",
    "spent_micros": "0",
    "reserved_micros": "0",
    "attempts": "0",
    "last_error": "''::text",
    "webhook_url": "''::character varying",
    "webhook_secret": "''::text",
    "total_calls": "0",
    "cost_cents": "0",
    "was_cached": "false",
    "budgeted": "false",
    "status": "'pending'::text",
}


@pytest.mark.parametrize("model", ALL_MODELS, ids=lambda m: m._meta.db_table)
def test_columns_types_nullability_and_defaults_match_the_model(model):
    columns = reflected_columns(model._meta.db_table)
    fields = {f.column: f for f in model._meta.concrete_fields}
    assert set(columns) == set(fields)
    for column, field in fields.items():
        type_, not_null, default = columns[column]
        assert type_ == expected_type(field), column
        assert not_null is (not field.null), column
        if field.has_db_default():
            assert default == EXPECTED_DEFAULTS[column], column
        else:
            assert default is None, column


@pytest.mark.parametrize("model", ALL_MODELS, ids=lambda m: m._meta.db_table)
def test_checks_uniques_and_indexes_match_the_model(model):
    table = model._meta.db_table
    with connections["owner"].cursor() as cursor:
        reflected = connections["owner"].introspection.get_constraints(cursor, table)

    checks = {name for name, c in reflected.items() if c["check"]}
    expected_checks = {c.name for c in model._meta.constraints if isinstance(c, models.CheckConstraint)}
    assert checks == expected_checks

    uniques = {name: c["columns"] for name, c in reflected.items() if c["unique"] and not c["primary_key"]}
    expected_uniques = {
        c.name: [model._meta.get_field(f).column for f in c.fields]
        for c in model._meta.constraints
        if isinstance(c, models.UniqueConstraint)
    }
    field_uniques = [[f.column] for f in model._meta.concrete_fields if f.unique and not f.primary_key]
    assert sorted(uniques.values()) == sorted([*expected_uniques.values(), *field_uniques])
    for name, columns in expected_uniques.items():
        assert uniques[name] == columns

    indexes = {
        name: (c["columns"], c["orders"])
        for name, c in reflected.items()
        if c["index"] and not c["unique"] and not c["primary_key"]
    }
    expected_indexes = {}
    for index in model._meta.indexes:
        columns, orders = [], []
        for expression in index.expressions:
            descending = isinstance(expression, models.OrderBy) and expression.descending
            name = expression.expression.name if isinstance(expression, models.OrderBy) else expression.name
            columns.append(model._meta.get_field(name).column)
            orders.append("DESC" if descending else "ASC")
        expected_indexes[index.name] = (columns, orders)
    assert indexes == expected_indexes


@pytest.mark.parametrize("model", TENANT_MODELS, ids=lambda m: m._meta.db_table)
def test_tenant_foreign_key_cascades_in_the_database(model):
    with connections["owner"].cursor() as cursor:
        cursor.execute(
            """
            SELECT confrelid::regclass::text, confdeltype, a.attname
              FROM pg_constraint c
              JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY(c.conkey)
             WHERE c.conrelid = %s::regclass AND c.contype = 'f'
            """,
            [model._meta.db_table],
        )
        keys = sorted(cursor.fetchall())
    # A call keeps the price row it was costed with; a delivery its alert (which cascades).
    other = {
        LLMApiCall: [("llm_model_prices", "a", "price_id")],
        AlertDelivery: [("llm_budget_alerts", "a", "alert_id")],
    }.get(model, [])
    assert keys == sorted([*other, ("tenants", "c", "tenant_id")])


@pytest.mark.django_db(transaction=True)
def test_llm_migrations_reverse_and_reapply_cleanly():
    def policies() -> int:
        with connections["owner"].cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_policies WHERE schemaname = 'public'")
            return cursor.fetchone()[0]

    assert policies() == len(TENANT_MODELS) + 4  # and the tenant directory's four
    call_command("migrate", "llm", "0002", verbosity=0)
    assert policies() == 0
    call_command("migrate", "llm", "zero", verbosity=0)
    call_command("migrate", verbosity=0)
    assert policies() == len(TENANT_MODELS) + 4
    test_makemigrations_finds_nothing_to_do()
