"""No temporary tables for anyone but the database owner's superusers: PostgreSQL grants
TEMPORARY on every new database to PUBLIC, and the runtime role needs none. Revoked from
PUBLIC, since that is where the runtime role gets it from; run as the owner, who owns the
database."""

from django.db import migrations

REVOKE = """
DO $$ BEGIN
    EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
END $$
"""
GRANT = """
DO $$ BEGIN
    EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO PUBLIC', current_database());
END $$
"""


class Migration(migrations.Migration):
    dependencies = [("llm", "0005_job_request_id_default")]

    operations = [migrations.RunSQL(REVOKE, GRANT)]
