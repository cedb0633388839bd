"""Tenants: the directory every tenant-sealed row points at, and their API keys."""

from django.db import transaction

from llm.api_keys import generate_api_key, hash_api_key
from llm.models import Tenant


def create_tenant(*, name: str, notification_email: str = "") -> tuple[Tenant, str]:
    """Create a tenant and return it with its API key, which is never stored or shown again."""
    name = name.strip()
    if not name:
        raise ValueError("A tenant needs a non-blank name.")
    api_key = generate_api_key()
    with transaction.atomic():
        tenant = Tenant.objects.create(
            name=name, notification_email=notification_email, api_key_hash=hash_api_key(api_key)
        )
    return tenant, api_key
