"""Where a tenant's budget alerts go: `manage.py configure_alerts --tenant ID|NAME
[--email ADDRESS] [--webhook-url URL]` ('' clears either). A new webhook URL gets a new
signing secret, printed once."""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from llm.services import AmbiguousTenant, UnknownTenant, configure_alerts, find_tenant


class Command(BaseCommand):
    help = "Set the email address and webhook URL a tenant's budget alerts are sent to."

    def add_arguments(self, parser):
        parser.add_argument("--tenant", required=True, help="The tenant's id or name.")
        parser.add_argument("--email", help="Alert email address ('' to stop emails).")
        parser.add_argument("--webhook-url", help="Alert webhook URL, http(s) ('' to stop webhooks).")

    def handle(self, *args, tenant: str, email: str | None, webhook_url: str | None, **options):
        if email is None and webhook_url is None:
            raise CommandError("Give --email and/or --webhook-url.")
        try:
            found = find_tenant(reference=tenant)
            secret = configure_alerts(tenant_id=found.id, email=email, webhook_url=webhook_url)
        except (UnknownTenant, AmbiguousTenant) as error:
            raise CommandError(f"{error} Nothing was changed.") from None
        except ValidationError as error:
            raise CommandError(f"{'; '.join(error.messages)} Nothing was changed.") from None
        now = find_tenant(reference=str(found.id))  # all of where they go, not only what changed
        self.stdout.write(
            f"{now.name}: alerts go to {now.notification_email or '(no email)'} "
            f"and {now.webhook_url or '(no webhook)'}."
        )
        if secret:
            self.stdout.write(
                f"Webhook signing secret, shown only now (X-Skeldir-Signature: sha256=HMAC-SHA256 of "
                f"'<X-Skeldir-Timestamp>.<body>'): {secret}"
            )
