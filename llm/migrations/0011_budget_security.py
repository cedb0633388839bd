"""The budget tables are tenant-sealed like the LLM tables (see 0002 and 0003): their tenant
foreign keys cascade in the database, RLS is enabled and forced with the same policy, and the
runtime role gets exactly what the budget services need. Decisions and alerts are
append-only for it. It may also change a tenant's alert settings (email, webhook), column by
column, and nothing else of the tenant directory.
"""

from django.db import migrations

from llm.migrations._runtime_role import runtime_role

BUDGET_TABLE_PRIVILEGES = {
    "llm_budgets": "SELECT, INSERT, UPDATE, DELETE",  # set and removed by operators
    "llm_budget_state": "SELECT, INSERT, UPDATE",
    "llm_budget_reservations": "SELECT, INSERT, UPDATE",
    "llm_budget_decisions": "SELECT, INSERT",
    "llm_budget_alerts": "SELECT, INSERT",
    "llm_alert_deliveries": "SELECT, INSERT, UPDATE",
}
TABLES = ", ".join(f"'{table}'" for table in BUDGET_TABLE_PRIVILEGES)
TENANT_ALERT_COLUMNS = "notification_email, webhook_url, webhook_secret, updated_at"
TENANT_PREDICATE = "tenant_id = (SELECT NULLIF(current_setting('app.current_tenant_id', true), '')::uuid)"

CASCADE_TENANT_FKS = """
DO $$
DECLARE
    tbl text;
    fk text;
BEGIN
    FOREACH tbl IN ARRAY ARRAY[{tables}] LOOP
        SELECT conname INTO STRICT fk FROM pg_constraint
         WHERE conrelid = tbl::regclass AND contype = 'f' AND confrelid = 'tenants'::regclass;
        EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I', tbl, fk);
        EXECUTE format(
            'ALTER TABLE %I ADD CONSTRAINT %I FOREIGN KEY (tenant_id) REFERENCES tenants (id) '
            '{action} DEFERRABLE INITIALLY DEFERRED', tbl, fk);
    END LOOP;
END
$$;
"""


def seal(apps, schema_editor):
    role = runtime_role(schema_editor)
    schema_editor.execute(CASCADE_TENANT_FKS.format(action="ON DELETE CASCADE", tables=TABLES), params=None)
    for table, privileges in BUDGET_TABLE_PRIVILEGES.items():
        schema_editor.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        schema_editor.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        schema_editor.execute(
            f"CREATE POLICY {table}_tenant_isolation ON {table} "
            f"USING ({TENANT_PREDICATE}) WITH CHECK ({TENANT_PREDICATE})"
        )
        schema_editor.execute(f"GRANT {privileges} ON {table} TO {role}")
    schema_editor.execute(f"GRANT UPDATE ({TENANT_ALERT_COLUMNS}) ON tenants TO {role}")


def unseal(apps, schema_editor):
    role = runtime_role(schema_editor)
    schema_editor.execute(f"REVOKE UPDATE ({TENANT_ALERT_COLUMNS}) ON tenants FROM {role}")
    for table in BUDGET_TABLE_PRIVILEGES:
        schema_editor.execute(f"REVOKE ALL ON {table} FROM {role}")
        schema_editor.execute(f"DROP POLICY {table}_tenant_isolation ON {table}")
        schema_editor.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
        schema_editor.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
    schema_editor.execute(CASCADE_TENANT_FKS.format(action="", tables=TABLES), params=None)


class Migration(migrations.Migration):
    dependencies = [("llm", "0010_budgets")]

    operations = [migrations.RunPython(seal, unseal)]
