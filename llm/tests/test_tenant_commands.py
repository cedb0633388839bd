"""`manage.py create_tenant` and `manage.py rotate_api_key`: a tenant's API key is printed
once, only its hash is stored, and a rotated key stops working on the API at once. Both run
as the runtime role, which may update exactly the key hash and updated_at of `tenants`."""

import re
import uuid
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from llm.api_keys import hash_api_key
from llm.models import Tenant
from llm.services import UnknownTenant, rotate_api_key

pytestmark = pytest.mark.django_db(transaction=True)

API_KEY = re.compile(r"sk_[A-Za-z0-9_-]{43}")


def command(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def status_with_key(client, api_key: str) -> int:
    return client.get("/api/llm/costs/current", headers={"Authorization": f"Bearer {api_key}"}).status_code


def test_create_tenant_prints_its_id_and_api_key_once_and_the_key_works(client):
    output = command("create_tenant", "Acme Retail", "--email", "ops@acme.example")
    tenant = Tenant.objects.get(name="Acme Retail")
    [api_key] = API_KEY.findall(output)  # printed exactly once
    assert str(tenant.id) in output and "shown only now" in output
    assert tenant.notification_email == "ops@acme.example"
    assert tenant.api_key_hash == hash_api_key(api_key)  # only the hash is stored
    assert status_with_key(client, api_key) == 200


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["   "], "non-blank name"),
        (["Acme Retail"], "A tenant named 'Acme Retail' already exists"),
        (["Other", "--email", "not-an-address"], "'not-an-address' is not an email address"),
    ],
)
def test_create_tenant_refuses_clearly_and_writes_nothing(args, message, tenant_factory):
    tenant_factory.create(name="Acme Retail")
    with pytest.raises(CommandError, match=f"{message}.*Nothing was created"):
        command("create_tenant", *args)
    assert list(Tenant.objects.values_list("name", flat=True)) == ["Acme Retail"]


@pytest.mark.parametrize("by", ["name", "id"])
def test_rotating_a_key_stops_the_old_one_at_once_and_prints_the_new_one_once(
    by, client, tenant_factory, tenant_a, tenant_b
):
    old_key = tenant_factory.api_keys[tenant_a.id]
    assert status_with_key(client, old_key) == 200
    before = Tenant.objects.get(id=tenant_a.id)

    output = command("rotate_api_key", "--tenant", tenant_a.name if by == "name" else str(tenant_a.id))

    [new_key] = API_KEY.findall(output)
    assert new_key != old_key and str(tenant_a.id) in output and "shown only now" in output
    assert status_with_key(client, old_key) == 401  # right away: no cache, no grace period
    assert status_with_key(client, new_key) == 200
    after = Tenant.objects.get(id=tenant_a.id)
    assert after.api_key_hash == hash_api_key(new_key)
    assert (after.name, after.created_at) == (before.name, before.created_at)
    assert after.updated_at > before.updated_at
    assert status_with_key(client, tenant_factory.api_keys[tenant_b.id]) == 200  # others untouched


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("Twin", r"More than one tenant is named 'Twin' \(.*\); pass its id"),
        ("Nobody", "No tenant 'Nobody'"),
        ("00000000-0000-4000-8000-000000000000", "No tenant '00000000-0000-4000-8000-000000000000'"),
    ],
)
def test_rotate_api_key_errors_on_unknown_or_ambiguous_tenants_and_changes_nothing(
    reference, message, tenant_factory
):
    twins = [tenant_factory.create(name="Twin"), tenant_factory.create(name="Twin")]
    hashes = dict(Tenant.objects.values_list("id", "api_key_hash"))
    with pytest.raises(CommandError, match=f"{message}.*No key was changed"):
        command("rotate_api_key", "--tenant", reference)
    assert dict(Tenant.objects.values_list("id", "api_key_hash")) == hashes
    assert command("rotate_api_key", "--tenant", str(twins[0].id))  # an id picks one of them


def test_the_service_refuses_an_unknown_tenant():
    with pytest.raises(UnknownTenant):
        rotate_api_key(tenant_id=uuid.uuid4())
