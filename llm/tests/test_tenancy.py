"""`tenant_context` and `current_tenant_id`: validation before SQL, nesting, restoring."""

import uuid

import pytest
from django.db import transaction

from llm.models import LLMApiCall
from llm.tests.factories import create_tenant_row
from skeldir.tenancy import current_tenant_id, parse_tenant_id, tenant_context

pytestmark = pytest.mark.django_db(transaction=True)

BAD_TENANT_IDS = [
    "x' OR 1=1 --",
    "'; SET app.current_tenant_id = '00000000-0000-0000-0000-000000000000'; --",
    "",
    "   ",
    "not-a-uuid",
    "12345678-1234-1234-1234-1234567890zz",
    None,
    42,
    True,
    b"\x00" * 16,
    ["00000000-0000-0000-0000-000000000000"],
]


@pytest.mark.parametrize("bad", BAD_TENANT_IDS, ids=repr)
def test_malformed_tenant_ids_are_rejected_before_any_sql(bad, django_assert_num_queries):
    with (
        django_assert_num_queries(0),
        pytest.raises(ValueError, match="tenant_id must be a UUID"),
        tenant_context(bad),
    ):
        pytest.fail("the block must not run")


def test_accepts_a_uuid_or_its_string(tenant_a):
    assert parse_tenant_id(str(tenant_a.id)) == tenant_a.id
    with tenant_context(str(tenant_a.id)) as entered:
        assert entered == tenant_a.id
        assert current_tenant_id() == tenant_a.id
    assert current_tenant_id() is None


def test_nested_contexts_switch_and_restore_the_tenant(tenant_a, tenant_b):
    create_tenant_row(LLMApiCall, tenant=tenant_a)
    with tenant_context(tenant_a.id):
        with tenant_context(tenant_b.id):
            assert current_tenant_id() == tenant_b.id
            assert LLMApiCall.objects.count() == 0
        assert current_tenant_id() == tenant_a.id
        assert LLMApiCall.objects.count() == 1
    assert current_tenant_id() is None


def test_an_exception_in_a_nested_context_restores_the_outer_tenant_and_rolls_back(tenant_a, tenant_b):
    with tenant_context(tenant_a.id):
        with pytest.raises(RuntimeError), tenant_context(tenant_b.id):
            create_tenant_row(LLMApiCall, tenant=tenant_b)
            raise RuntimeError("part-way failure")
        assert current_tenant_id() == tenant_a.id
    with tenant_context(tenant_b.id):
        assert LLMApiCall.objects.count() == 0


def test_the_tenant_is_transaction_local_not_session_wide(tenant_a):
    with transaction.atomic():
        with tenant_context(tenant_a.id):
            pass
        assert current_tenant_id() is None
    assert current_tenant_id() is None


def test_an_unknown_but_well_formed_tenant_sees_nothing(tenant_a):
    create_tenant_row(LLMApiCall, tenant=tenant_a)
    with tenant_context(uuid.uuid4()):
        assert LLMApiCall.objects.count() == 0
