"""Replace a tenant's API key: the old one stops working at once; the new one is printed once."""

from django.core.management.base import BaseCommand, CommandError

from llm.services import AmbiguousTenant, UnknownTenant, find_tenant, rotate_api_key


class Command(BaseCommand):
    help = "Give a tenant a new API key (the old key stops working at once); prints it once."

    def add_arguments(self, parser):
        parser.add_argument("--tenant", required=True, help="The tenant's id or name.")

    def handle(self, *args, tenant: str, **options):
        try:
            found = find_tenant(reference=tenant)
            api_key = rotate_api_key(tenant_id=found.id)
        except (UnknownTenant, AmbiguousTenant) as error:
            raise CommandError(f"{error} No key was changed.") from None
        self.stdout.write(f"New API key for {found.name} ({found.id}); the previous key no longer works.")
        self.stdout.write(f"The new key, shown only now (only its hash is stored): {api_key}")
