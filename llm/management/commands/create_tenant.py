"""Create a tenant and print its id and API key, once: only the key's hash is stored."""

from django.core.management.base import BaseCommand, CommandError

from llm.services import create_tenant


class Command(BaseCommand):
    help = "Create a tenant; prints its id and its API key, which is shown only this once."

    def add_arguments(self, parser):
        parser.add_argument("name", help="The tenant's name (must not be another tenant's).")
        parser.add_argument("--email", default="", help="Notification email address (optional).")

    def handle(self, *args, name: str, email: str, **options):
        try:
            tenant, api_key = create_tenant(name=name, notification_email=email, unique_name=True)
        except ValueError as error:
            raise CommandError(f"{error} Nothing was created.") from None
        self.stdout.write(f"Created tenant {tenant.name} ({tenant.id}).")
        self.stdout.write(f"Its API key, shown only now (only its hash is stored): {api_key}")
