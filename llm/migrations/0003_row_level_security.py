"""Row-level security on the four LLM tables, and the runtime role's privileges.

The runtime role is the user of the `default` database alias (DATABASE_URL). It gets exactly
what the service needs: read and insert on the tenant directory, read and insert (never update
or delete) on the audit table `llm_api_calls`, read, insert and update on the monthly costs
and the two job tables, and the ordinary privileges on Django's own tables (sessions, admin
users). The policy is the same on each table, for USING and WITH CHECK: with no tenant set it
is NULL, so nothing is visible and nothing can be written.
"""

from django.db import migrations

from llm.migrations._runtime_role import runtime_role

TENANT_TABLES = ("llm_api_calls", "llm_monthly_costs", "investigations", "budget_optimization_jobs")

TENANT_PREDICATE = "tenant_id = (SELECT NULLIF(current_setting('app.current_tenant_id', true), '')::uuid)"

RUNTIME_TABLE_PRIVILEGES = {
    "tenants": "SELECT, INSERT",
    "llm_api_calls": "SELECT, INSERT",
    "llm_monthly_costs": "SELECT, INSERT, UPDATE",
    "investigations": "SELECT, INSERT, UPDATE",
    "budget_optimization_jobs": "SELECT, INSERT, UPDATE",
    "django_migrations": "SELECT",
    "django_content_type": "SELECT",
    "auth_permission": "SELECT",
    "auth_group": "SELECT, INSERT, UPDATE, DELETE",
    "auth_group_permissions": "SELECT, INSERT, UPDATE, DELETE",
    "auth_user": "SELECT, INSERT, UPDATE, DELETE",
    "auth_user_groups": "SELECT, INSERT, UPDATE, DELETE",
    "auth_user_user_permissions": "SELECT, INSERT, UPDATE, DELETE",
    "django_admin_log": "SELECT, INSERT, UPDATE, DELETE",
    "django_session": "SELECT, INSERT, UPDATE, DELETE",
}


def enable_row_level_security(apps, schema_editor):
    role = runtime_role(schema_editor)
    for table in TENANT_TABLES:
        schema_editor.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        schema_editor.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        schema_editor.execute(
            f"CREATE POLICY {table}_tenant_isolation ON {table} "
            f"USING ({TENANT_PREDICATE}) WITH CHECK ({TENANT_PREDICATE})"
        )
    for table, privileges in RUNTIME_TABLE_PRIVILEGES.items():
        schema_editor.execute(f"GRANT {privileges} ON {table} TO {role}")
    # Django's own tables use identity columns, whose sequences need USAGE for inserts.
    schema_editor.execute(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}")


def disable_row_level_security(apps, schema_editor):
    role = runtime_role(schema_editor)
    schema_editor.execute(f"REVOKE USAGE ON ALL SEQUENCES IN SCHEMA public FROM {role}")
    for table in RUNTIME_TABLE_PRIVILEGES:
        schema_editor.execute(f"REVOKE ALL ON {table} FROM {role}")
    for table in TENANT_TABLES:
        schema_editor.execute(f"DROP POLICY {table}_tenant_isolation ON {table}")
        schema_editor.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
        schema_editor.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")


class Migration(migrations.Migration):
    dependencies = [
        ("llm", "0002_tenant_foreign_keys_cascade"),
        ("admin", "0003_logentry_add_action_flag_choices"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("sessions", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(enable_row_level_security, disable_row_level_security),
    ]
