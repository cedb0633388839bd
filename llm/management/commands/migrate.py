"""`migrate`, run as the owner role: the runtime role owns nothing and cannot change schema."""

from django.core.management.base import CommandError
from django.core.management.commands.migrate import Command as DjangoMigrateCommand
from django.db import connections

OWNER_ALIAS = "owner"


class Command(DjangoMigrateCommand):
    help = DjangoMigrateCommand.help + " Runs as the owner role (DATABASE_OWNER_URL) by default."

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.set_defaults(database=OWNER_ALIAS)

    def handle(self, *args, **options):
        if options["database"] not in connections.settings:
            raise CommandError(
                "migrate runs as the table owner: set DATABASE_OWNER_URL (the owner role's "
                "connection) next to DATABASE_URL, or unset both to use the embedded database."
            )
        return super().handle(*args, **options)
