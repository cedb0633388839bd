"""The tenant directory stays readable by every process (an API key is looked up before any
tenant is known), but a tenant's row may only be changed inside that tenant: its key, its
alert settings and its budget marker are as sealed as its LLM rows. Without this, any SQL run
as the runtime role could turn off another tenant's budget or redirect its alerts."""

from django.db import migrations

CURRENT_TENANT = "(SELECT NULLIF(current_setting('app.current_tenant_id', true), '')::uuid)"

SEAL = f"""
ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenants_read ON tenants FOR SELECT USING (true);
CREATE POLICY tenants_insert ON tenants FOR INSERT WITH CHECK (true);
CREATE POLICY tenants_update ON tenants FOR UPDATE
    USING (id = {CURRENT_TENANT}) WITH CHECK (id = {CURRENT_TENANT});
-- The runtime role holds no DELETE; the owner deletes tenants (their rows cascade).
CREATE POLICY tenants_delete ON tenants FOR DELETE USING (true);
"""

UNSEAL = """
DROP POLICY tenants_read ON tenants;
DROP POLICY tenants_insert ON tenants;
DROP POLICY tenants_update ON tenants;
DROP POLICY tenants_delete ON tenants;
ALTER TABLE tenants NO FORCE ROW LEVEL SECURITY;
ALTER TABLE tenants DISABLE ROW LEVEL SECURITY;
"""


class Migration(migrations.Migration):
    dependencies = [("llm", "0012_tenant_budgeted")]

    operations = [migrations.RunSQL(SEAL, UNSEAL)]
