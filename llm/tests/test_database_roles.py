"""The runtime role the application uses can neither bypass nor change the security boundary."""

import pytest
from django.db import connection, connections

from llm.models import AlertDelivery, Tenant
from llm.tests.factories import TENANT_MODELS

TENANT_TABLES = {m._meta.db_table for m in (*TENANT_MODELS, AlertDelivery)}
ALL_TABLES = TENANT_TABLES | {Tenant._meta.db_table}

pytestmark = pytest.mark.django_db


def fetch(sql, params=None, *, using="default"):
    with connections[using].cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def test_runtime_role_is_neither_superuser_nor_bypassrls():
    [(name, is_super, bypass, can_create_db, can_create_role)] = fetch(
        "SELECT rolname, rolsuper, rolbypassrls, rolcreatedb, rolcreaterole "
        "FROM pg_roles WHERE rolname = current_user"
    )
    assert name == connection.settings_dict["USER"]
    assert (is_super, bypass, can_create_db, can_create_role) == (False, False, False, False)


def test_owner_role_is_a_different_role_bound_by_forced_rls():
    [(owner_name, is_super, bypass)] = fetch(
        "SELECT rolname, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user", using="owner"
    )
    assert owner_name != connection.settings_dict["USER"]
    assert (is_super, bypass) == (False, False)


def test_runtime_role_owns_none_of_the_tables():
    rows = fetch(
        "SELECT c.relname, pg_get_userbyid(c.relowner) FROM pg_class c "
        "WHERE c.relname = ANY(%s) AND c.relkind = 'r'",
        [sorted(ALL_TABLES)],
    )
    owners = dict(rows)
    assert set(owners) == ALL_TABLES
    assert connection.settings_dict["USER"] not in owners.values()
    assert set(owners.values()) == {connections["owner"].settings_dict["USER"]}


def test_rls_is_enabled_and_forced_on_exactly_the_tenant_tables():
    rows = fetch(
        "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class "
        "WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'"
    )
    protected = {name for name, enabled, forced in rows if enabled and forced}
    partly = {name for name, enabled, forced in rows if enabled != forced}
    assert protected == TENANT_TABLES | {"tenants"}
    assert partly == set()


def test_one_policy_per_llm_table_with_the_tenant_predicate_for_using_and_check():
    rows = fetch(
        "SELECT tablename, cmd, roles, qual, with_check FROM pg_policies"
        " WHERE schemaname = 'public' AND tablename <> 'tenants'"
    )
    assert sorted(r[0] for r in rows) == sorted(TENANT_TABLES)
    for table, command, roles, using, check in rows:
        assert command == "ALL", table
        assert roles == ["public"], table
        assert using == check, table
        assert "current_setting('app.current_tenant_id'::text, true)" in using
        assert "NULLIF" in using and "SELECT" in using


@pytest.mark.parametrize(
    ("table", "privilege", "expected"),
    [
        ("tenants", "SELECT", True),
        ("tenants", "INSERT", True),
        ("tenants", "UPDATE", False),
        ("tenants", "DELETE", False),
        ("llm_api_calls", "SELECT", True),
        ("llm_api_calls", "INSERT", True),
        ("llm_api_calls", "UPDATE", False),
        ("llm_api_calls", "DELETE", False),
        ("llm_monthly_costs", "UPDATE", True),
        ("llm_monthly_costs", "DELETE", False),
        ("investigations", "UPDATE", True),
        ("investigations", "DELETE", False),
        ("budget_optimization_jobs", "UPDATE", True),
        ("budget_optimization_jobs", "DELETE", False),
        ("llm_budgets", "DELETE", True),
        *[(table, "UPDATE", True) for table in ("llm_budget_state", "llm_budget_reservations")],
        *[(table, "UPDATE", False) for table in ("llm_budget_decisions", "llm_budget_alerts")],
        *[
            (table, "DELETE", False)
            for table in ("llm_budget_decisions", "llm_budget_alerts", "llm_budget_state")
        ],
        ("llm_alert_deliveries", "UPDATE", True),
        ("llm_model_prices", "SELECT", True),
        *[("llm_model_prices", privilege, False) for privilege in ("INSERT", "UPDATE", "DELETE")],
        *[(table, "TRUNCATE", False) for table in sorted(ALL_TABLES)],
    ],
)
def test_runtime_role_holds_only_the_privileges_it_needs(table, privilege, expected):
    [(granted,)] = fetch("SELECT has_table_privilege(current_user, %s, %s)", [table, privilege])
    assert granted is expected


def test_runtime_role_may_update_exactly_the_key_and_alert_columns_of_tenants():
    """Column privileges (migrations runtime_may_rotate_api_keys, budget_security): rotating an
    API key and setting where alerts go, nothing else."""
    columns = [name for (name,) in fetch(
        "SELECT attname FROM pg_attribute WHERE attrelid = 'tenants'::regclass AND attnum > 0 "
        "AND NOT attisdropped"
    )]  # fmt: skip
    updatable = {
        column
        for column in columns
        if fetch("SELECT has_column_privilege(current_user, 'tenants', %s, 'UPDATE')", [column])[0][0]
    }
    assert updatable == {
        "api_key_hash",
        "updated_at",
        "notification_email",
        "webhook_url",
        "webhook_secret",
        "budgeted",
    }
    [(table_level,)] = fetch("SELECT has_table_privilege(current_user, 'tenants', 'UPDATE')")
    assert table_level is False
    with pytest.raises(Exception, match="permission denied"), connection.cursor() as cursor:
        cursor.execute("UPDATE tenants SET name = 'renamed'")


def test_runtime_role_cannot_create_objects_or_change_policies():
    [(can_create,)] = fetch("SELECT has_schema_privilege(current_user, 'public', 'CREATE')")
    assert can_create is False
    with pytest.raises(Exception, match="must be owner"), connection.cursor() as cursor:
        cursor.execute("ALTER TABLE llm_api_calls DISABLE ROW LEVEL SECURITY")


@pytest.mark.django_db(transaction=True)
def test_runtime_role_cannot_create_temporary_tables():
    [(can_temp,)] = fetch("SELECT has_database_privilege(current_user, current_database(), 'TEMPORARY')")
    assert can_temp is False
    with pytest.raises(Exception, match="permission denied"), connection.cursor() as cursor:
        cursor.execute("CREATE TEMP TABLE smuggled (x int)")


@pytest.mark.django_db(transaction=True)
def test_a_tenants_row_may_only_be_changed_inside_that_tenant(tenant_factory):
    """Review F8: the directory is readable by all, but changing another tenant's key, alert
    settings or budget marker from inside one tenant (or none) touches nothing."""
    from skeldir.tenancy import tenant_context

    a, b = tenant_factory.create(), tenant_factory.create()
    for inside in (a.id, None):
        with connection.cursor() as cursor:
            if inside:
                cursor.execute("SELECT set_config('app.current_tenant_id', %s, false)", [str(inside)])
            cursor.execute(
                "UPDATE tenants SET budgeted = true, webhook_url = 'http://evil' WHERE id = %s", [b.id]
            )
            assert cursor.rowcount == 0
            cursor.execute("SELECT set_config('app.current_tenant_id', '', false)")
    assert Tenant.objects.filter(id=b.id, budgeted=False, webhook_url="").exists()
    with tenant_context(b.id), connection.cursor() as cursor:
        cursor.execute("UPDATE tenants SET budgeted = true WHERE id = %s", [b.id])
        assert cursor.rowcount == 1
