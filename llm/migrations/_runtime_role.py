"""The runtime role's name, for the migrations that grant it privileges."""

from django.conf import settings


def runtime_role(schema_editor) -> str:
    role = settings.DATABASES["default"].get("USER")
    owner = schema_editor.connection.settings_dict.get("USER")
    if not role:
        raise RuntimeError("DATABASE_URL must name the runtime role (its user) to grant it privileges.")
    if role == owner:
        raise RuntimeError(
            f"The runtime role and the migrating owner role are both {role!r}; they must differ."
        )
    return schema_editor.quote_name(role)
