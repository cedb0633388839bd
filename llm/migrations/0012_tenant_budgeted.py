"""tenants.budgeted: whether admission is needed at all, readable in one query."""

from django.db import migrations, models

from llm.migrations._runtime_role import runtime_role


def grant(apps, schema_editor):
    # set_budget and remove_budget keep the marker with the budget, as the runtime role.
    schema_editor.execute(f"GRANT UPDATE (budgeted) ON tenants TO {runtime_role(schema_editor)}")


def revoke(apps, schema_editor):
    schema_editor.execute(f"REVOKE UPDATE (budgeted) ON tenants FROM {runtime_role(schema_editor)}")


class Migration(migrations.Migration):
    dependencies = [
        ("llm", "0011_budget_security"),
    ]

    operations = [
        migrations.AddField(
            model_name="tenant",
            name="budgeted",
            field=models.BooleanField(db_default=False, default=False, editable=False),
        ),
        migrations.RunPython(grant, revoke),
    ]
