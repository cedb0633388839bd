"""Tenants: the directory every tenant-sealed row points at, and their API keys."""

import uuid

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.db.models.functions import Now

from llm.api_keys import generate_api_key, hash_api_key
from llm.models import Tenant
from llm.services.errors import AmbiguousTenant, UnknownTenant
from skeldir.tenancy import tenant_context


def create_tenant(
    *, name: str, notification_email: str = "", unique_name: bool = False
) -> tuple[Tenant, str]:
    """Create a tenant and return it with its API key, which is never stored or shown again.

    `unique_name` refuses a name another tenant has (a name given to `--tenant` must find
    one tenant). Nothing is written when the name or the email is refused."""
    name = name.strip()
    notification_email = notification_email.strip()
    if not name:
        raise ValueError("A tenant needs a non-blank name.")
    if notification_email:
        try:
            validate_email(notification_email)
        except ValidationError:
            raise ValueError(f"{notification_email!r} is not an email address.") from None
    api_key = generate_api_key()
    with transaction.atomic():
        if unique_name and (existing := Tenant.objects.filter(name=name).first()):
            raise ValueError(f"A tenant named {name!r} already exists ({existing.id}); choose another name.")
        tenant = Tenant.objects.create(
            name=name, notification_email=notification_email, api_key_hash=hash_api_key(api_key)
        )
    return tenant, api_key


def find_tenant(*, reference: str) -> Tenant:
    """The tenant a person names on a command line: by id, or else by its exact name.

    Raises UnknownTenant when none matches and AmbiguousTenant when several share the name."""
    reference = reference.strip()
    try:
        tenant_id = uuid.UUID(reference)
    except ValueError:
        matches = list(Tenant.objects.filter(name=reference).order_by("created_at", "id")[:3])
        if len(matches) > 1:
            ids = ", ".join(str(t.id) for t in matches[:2]) + (" and more" if len(matches) > 2 else "")
            raise AmbiguousTenant(
                f"More than one tenant is named {reference!r} ({ids}); pass its id."
            ) from None
        if matches:
            return matches[0]
    else:
        tenant = Tenant.objects.filter(id=tenant_id).first()
        if tenant is not None:
            return tenant
    raise UnknownTenant(f"No tenant {reference!r}: pass an existing tenant's id or name.")


def rotate_api_key(*, tenant_id: uuid.UUID) -> str:
    """Give the tenant a new API key and return it (shown once, stored only as its hash).
    The previous key stops working as soon as this commits: requests look the key up each time.

    The runtime role may update exactly `api_key_hash` and `updated_at` of `tenants`
    (migration runtime_may_rotate_api_keys), and only of the tenant in force (RLS on updates,
    migration tenant_updates_sealed), nothing else of the directory."""
    api_key = generate_api_key()
    with tenant_context(tenant_id):
        rotated = Tenant.objects.filter(id=tenant_id).update(
            api_key_hash=hash_api_key(api_key), updated_at=Now()
        )
    if not rotated:
        raise UnknownTenant(f"Unknown tenant {tenant_id}.")
    return api_key
