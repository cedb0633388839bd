"""Tenant isolation enforced by PostgreSQL itself, table by table, on real connections.

These tests run in autocommit (`transaction=True`): Django's TestCase wraps every test in one
transaction, which would hide a tenant value that outlives its transaction.
"""

import threading

import pytest
from django.db import DatabaseError, connection, connections

from llm.models import LLMApiCall
from llm.tests.factories import (
    APPEND_ONLY_MODELS,
    DELETABLE_MODELS,
    FIELDS_BY_MODEL,
    TENANT_MODELS,
    cost_field,
    create_tenant_row,
)
from skeldir.tenancy import current_tenant_id, tenant_context

pytestmark = pytest.mark.django_db(transaction=True)

RLS_VIOLATION = "row-level security"
PERMISSION_DENIED = "permission denied"


def sqlstate(error: DatabaseError) -> str | None:
    return getattr(error.__cause__, "sqlstate", None)


@pytest.fixture(params=TENANT_MODELS, ids=lambda m: m._meta.db_table)
def model(request):
    return request.param


@pytest.fixture
def rows(model, tenant_a, tenant_b):
    return {
        "a": create_tenant_row(model, tenant=tenant_a),
        "b": create_tenant_row(model, tenant=tenant_b),
    }


def test_each_tenant_sees_its_rows_and_none_of_the_others(model, rows, tenant_a, tenant_b):
    with tenant_context(tenant_a.id):
        assert list(model.objects.values_list("id", flat=True)) == [rows["a"].id]
        assert not model.objects.filter(id=rows["b"].id).exists()
    with tenant_context(tenant_b.id):
        assert list(model.objects.values_list("id", flat=True)) == [rows["b"].id]


def test_with_no_tenant_nothing_is_visible_and_inserts_are_rejected(model, rows, tenant_a):
    assert current_tenant_id() is None
    assert model.objects.count() == 0
    with pytest.raises(DatabaseError, match=RLS_VIOLATION) as error:
        model.objects.create(tenant_id=tenant_a.id, **FIELDS_BY_MODEL[model]())
    assert sqlstate(error.value) == "42501"


def test_inserting_another_tenants_row_is_rejected(model, tenant_a, tenant_b):
    with pytest.raises(DatabaseError, match=RLS_VIOLATION), tenant_context(tenant_a.id):
        model.objects.create(tenant_id=tenant_b.id, **FIELDS_BY_MODEL[model]())
    with tenant_context(tenant_b.id):
        assert model.objects.count() == 0


def test_moving_a_row_to_another_tenant_is_rejected(model, rows, tenant_a, tenant_b):
    # The runtime role may not update the append-only tables at all; the others hit WITH CHECK.
    expected = PERMISSION_DENIED if model in APPEND_ONLY_MODELS else RLS_VIOLATION
    with pytest.raises(DatabaseError, match=expected), tenant_context(tenant_a.id):
        model.objects.filter(id=rows["a"].id).update(tenant_id=tenant_b.id)
    # The owner role is bound by FORCE ROW LEVEL SECURITY: the policy itself refuses the move.
    with pytest.raises(DatabaseError, match=RLS_VIOLATION), tenant_context(tenant_a.id, using="owner"):
        model.objects.using("owner").filter(id=rows["a"].id).update(tenant_id=tenant_b.id)
    with tenant_context(tenant_a.id):
        assert model.objects.filter(id=rows["a"].id).exists()


def test_updates_and_deletes_of_another_tenants_rows_touch_nothing(model, rows, tenant_a, tenant_b):
    zero_cost = {cost_field(model): 0}
    if model in APPEND_ONLY_MODELS:
        with pytest.raises(DatabaseError, match=PERMISSION_DENIED), tenant_context(tenant_a.id):
            model.objects.filter(id=rows["b"].id).update(**zero_cost)
    else:
        with tenant_context(tenant_a.id):
            assert model.objects.filter(id=rows["b"].id).update(**zero_cost) == 0
    # The runtime role holds no DELETE but on budgets, where the policy hides the row; the
    # owner, bound by the policy, deletes nothing either.
    delete = f"DELETE FROM {model._meta.db_table} WHERE id = %s"
    if model in DELETABLE_MODELS:
        with tenant_context(tenant_a.id), connection.cursor() as cursor:
            cursor.execute(delete, [rows["b"].id])
            assert cursor.rowcount == 0
    else:
        with (
            pytest.raises(DatabaseError, match=PERMISSION_DENIED),
            tenant_context(tenant_a.id),
            connection.cursor() as cursor,
        ):
            cursor.execute(delete, [rows["b"].id])
    with tenant_context(tenant_a.id, using="owner"):
        owner_rows = model.objects.using("owner")
        assert owner_rows.filter(id=rows["b"].id).update(**zero_cost) == 0
        with connections["owner"].cursor() as cursor:
            cursor.execute(f"DELETE FROM {model._meta.db_table} WHERE id = %s", [rows["b"].id])
            assert cursor.rowcount == 0
    with tenant_context(tenant_b.id):
        field = cost_field(model)
        assert getattr(model.objects.get(id=rows["b"].id), field) == getattr(rows["b"], field)


def test_persistent_connection_reads_nothing_after_a_tenant_context(tenant_a, settings):
    create_tenant_row(LLMApiCall, tenant=tenant_a)
    connection.close()
    connection.settings_dict["CONN_MAX_AGE"] = 600
    with tenant_context(tenant_a.id):
        backend_pid = _backend_pid()
        assert LLMApiCall.objects.count() == 1
    # The next "request" on the same server session: no error, no tenant, no rows.
    connection.close_if_unusable_or_obsolete()
    assert _backend_pid() == backend_pid
    assert current_tenant_id() is None
    assert LLMApiCall.objects.count() == 0
    with pytest.raises(RuntimeError), tenant_context(tenant_a.id):
        raise RuntimeError("the request failed")
    assert _backend_pid() == backend_pid
    assert current_tenant_id() is None
    assert LLMApiCall.objects.count() == 0


def test_two_threads_in_different_tenants_at_once_see_only_their_own(tenant_a, tenant_b):
    for tenant, count in ((tenant_a, 3), (tenant_b, 2)):
        for _ in range(count):
            create_tenant_row(LLMApiCall, tenant=tenant)
    both_inside = threading.Barrier(2, timeout=10)
    seen: dict[str, object] = {}

    def read_as(tenant):
        try:
            with tenant_context(tenant.id):
                both_inside.wait()  # the other thread's tenant is in force at this moment
                seen[tenant.name] = {
                    "pid": _backend_pid(),
                    "tenants": set(LLMApiCall.objects.values_list("tenant_id", flat=True)),
                    "count": LLMApiCall.objects.count(),
                }
                both_inside.wait()
        except Exception as error:  # reported to the main thread below
            seen[tenant.name] = error
        finally:
            connections.close_all()

    threads = [threading.Thread(target=read_as, args=(t,)) for t in (tenant_a, tenant_b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    a, b = seen[tenant_a.name], seen[tenant_b.name]
    assert isinstance(a, dict) and isinstance(b, dict), seen
    assert a["pid"] != b["pid"]
    assert (a["tenants"], a["count"]) == ({tenant_a.id}, 3)
    assert (b["tenants"], b["count"]) == ({tenant_b.id}, 2)


def _backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]
