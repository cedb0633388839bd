"""Create the database and both roles on a PostgreSQL server you run yourself.

The names and passwords come from DATABASE_URL (runtime role) and DATABASE_OWNER_URL (owner
role); the command connects with a superuser URL you pass once and do not store.
"""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from skeldir.provisioning import DatabaseLayout, provision_database


class Command(BaseCommand):
    help = "Create or correct the owner and runtime roles and the database (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--superuser-url",
            required=True,
            help="A superuser (or CREATEROLE + CREATEDB) connection, e.g. postgresql://postgres@db:5432/postgres",
        )

    def handle(self, *args, superuser_url: str, **options):
        runtime, owner = settings.DATABASES["default"], settings.DATABASES.get("owner")
        if owner is None:
            raise CommandError("Set DATABASE_OWNER_URL as well as DATABASE_URL: both roles are created.")
        if runtime["NAME"] != owner["NAME"]:
            raise CommandError("DATABASE_URL and DATABASE_OWNER_URL must name the same database.")
        layout = DatabaseLayout(
            database=runtime["NAME"],
            owner_role=owner["USER"],
            owner_password=owner.get("PASSWORD") or "",
            runtime_role=runtime["USER"],
            runtime_password=runtime.get("PASSWORD") or "",
        )
        try:
            created = provision_database(superuser_conninfo=superuser_url, layout=layout)
        except Exception as error:
            raise CommandError(f"Provisioning failed: {error}") from error
        self.stdout.write(
            f"Roles {layout.owner_role} (owner) and {layout.runtime_role} (runtime) are in place; "
            f"database {layout.database} was {'created' if created else 'already there'}. "
            "Next: python manage.py migrate"
        )
