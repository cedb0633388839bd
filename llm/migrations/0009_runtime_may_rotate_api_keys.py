"""The runtime role may rotate a tenant's API key: UPDATE of exactly `api_key_hash` and
`updated_at` on `tenants` (column privileges), so `rotate_api_key` works as that role while
it still cannot rename a tenant, change its email or touch any other column of the directory.
"""

from django.db import migrations

from llm.migrations._runtime_role import runtime_role

TENANT_ROTATION_COLUMNS = ("api_key_hash", "updated_at")


def grant(apps, schema_editor):
    columns = ", ".join(TENANT_ROTATION_COLUMNS)
    schema_editor.execute(f"GRANT UPDATE ({columns}) ON tenants TO {runtime_role(schema_editor)}")


def revoke(apps, schema_editor):
    columns = ", ".join(TENANT_ROTATION_COLUMNS)
    schema_editor.execute(f"REVOKE UPDATE ({columns}) ON tenants FROM {runtime_role(schema_editor)}")


class Migration(migrations.Migration):
    dependencies = [("llm", "0008_inspect_tenant_permission")]

    operations = [migrations.RunPython(grant, revoke)]
