"""Tables the development Celery set-up needs, created here by the owner so that the runtime
role never needs CREATE: kombu's SQLAlchemy transport (the broker when CELERY_BROKER_URL is
unset) and django-celery-results (the result backend then). The kombu DDL mirrors
kombu.transport.sqlalchemy.models; kombu finds the tables present and creates nothing.
"""

from django.db import migrations

from llm.migrations._runtime_role import runtime_role

KOMBU_TABLES = """
CREATE SEQUENCE IF NOT EXISTS queue_id_sequence;
CREATE TABLE IF NOT EXISTS kombu_queue (
    id INTEGER NOT NULL PRIMARY KEY,
    name VARCHAR(200) UNIQUE
);
CREATE SEQUENCE IF NOT EXISTS message_id_sequence;
CREATE TABLE IF NOT EXISTS kombu_message (
    id INTEGER NOT NULL PRIMARY KEY,
    visible BOOLEAN,
    timestamp TIMESTAMP WITHOUT TIME ZONE,
    payload TEXT NOT NULL,
    version SMALLINT NOT NULL,
    queue_id INTEGER CONSTRAINT "FK_kombu_message_queue" REFERENCES kombu_queue (id)
);
CREATE INDEX IF NOT EXISTS ix_kombu_message_timestamp ON kombu_message (timestamp);
CREATE INDEX IF NOT EXISTS ix_kombu_message_timestamp_id ON kombu_message (timestamp, id);
CREATE INDEX IF NOT EXISTS ix_kombu_message_visible ON kombu_message (visible);
"""

RUNTIME_TABLES = [
    "kombu_queue",
    "kombu_message",
    "django_celery_results_taskresult",
    "django_celery_results_groupresult",
    "django_celery_results_chordcounter",
]


def create_and_grant(apps, schema_editor):
    role = runtime_role(schema_editor)
    schema_editor.execute(KOMBU_TABLES)
    for table in RUNTIME_TABLES:
        schema_editor.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {role}")
    schema_editor.execute(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}")


def drop_and_revoke(apps, schema_editor):
    role = runtime_role(schema_editor)
    for table in RUNTIME_TABLES:
        schema_editor.execute(f"REVOKE ALL ON {table} FROM {role}")
    schema_editor.execute("DROP TABLE kombu_message, kombu_queue")
    schema_editor.execute("DROP SEQUENCE message_id_sequence, queue_id_sequence")


class Migration(migrations.Migration):
    dependencies = [
        ("llm", "0003_row_level_security"),
        ("django_celery_results", "0014_alter_taskresult_status"),
    ]

    operations = [migrations.RunPython(create_and_grant, drop_and_revoke)]
