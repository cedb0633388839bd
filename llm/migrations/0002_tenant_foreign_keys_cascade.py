"""Django 5.2 creates foreign keys without ON DELETE; the design wants the database itself to
cascade a tenant's deletion. The constraints keep their names, so Django still finds them.
(A separate migration: Django adds foreign keys at the end of the migration that creates them.)
"""

from django.db import migrations

CASCADE_TENANT_FKS = """
DO $$
DECLARE
    tbl text;
    fk text;
BEGIN
    FOREACH tbl IN ARRAY ARRAY[
        'llm_api_calls', 'llm_monthly_costs', 'investigations', 'budget_optimization_jobs'
    ] LOOP
        SELECT conname INTO STRICT fk FROM pg_constraint
         WHERE conrelid = tbl::regclass AND contype = 'f';
        EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I', tbl, fk);
        EXECUTE format(
            'ALTER TABLE %I ADD CONSTRAINT %I FOREIGN KEY (tenant_id) REFERENCES tenants (id) '
            '{action} DEFERRABLE INITIALLY DEFERRED', tbl, fk);
    END LOOP;
END
$$;
"""


class Migration(migrations.Migration):
    dependencies = [("llm", "0001_initial")]

    operations = [
        migrations.RunSQL(
            sql=CASCADE_TENANT_FKS.format(action="ON DELETE CASCADE"),
            reverse_sql=CASCADE_TENANT_FKS.format(action=""),
        ),
    ]
