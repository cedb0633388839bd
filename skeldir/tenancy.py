"""The one module that owns the tenant variable `app.current_tenant_id`.

Row-level security policies compare every row's tenant_id with this variable. It is only
ever set transaction-locally (`set_config(..., true)`) inside `transaction.atomic()`, so a
pooled or persistent connection never carries a tenant into the next request.
"""

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import DEFAULT_DB_ALIAS, connections, transaction

TENANT_SETTING = "app.current_tenant_id"


def parse_tenant_id(value: object) -> uuid.UUID:
    """Return `value` as a UUID, or raise ValueError; nothing else reaches SQL."""
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    raise ValueError(f"tenant_id must be a UUID or its string form, got {value!r}")


@contextmanager
def tenant_context(tenant_id: uuid.UUID | str, *, using: str = DEFAULT_DB_ALIAS) -> Iterator[uuid.UUID]:
    """Run the block inside `tenant_id`: an atomic block with the tenant variable set.

    Nests: an inner context switches tenant for its block and the outer tenant is back
    afterwards. An exception rolls the block back, and PostgreSQL's savepoint rollback
    restores the variable with it.
    """
    tenant = parse_tenant_id(tenant_id)
    connection = connections[using]
    nested = connection.in_atomic_block
    with transaction.atomic(using=using):
        with connection.cursor() as cursor:
            if nested:
                cursor.execute(
                    "SELECT current_setting(%s, true), set_config(%s, %s, true)",
                    [TENANT_SETTING, TENANT_SETTING, str(tenant)],
                )
                previous = cursor.fetchone()[0] or ""
            else:
                # The outermost block ends its transaction on exit, which clears the value.
                cursor.execute("SELECT set_config(%s, %s, true)", [TENANT_SETTING, str(tenant)])
        yield tenant
        if nested:
            with connection.cursor() as cursor:
                cursor.execute("SELECT set_config(%s, %s, true)", [TENANT_SETTING, previous])


def current_tenant_id(*, using: str = DEFAULT_DB_ALIAS) -> uuid.UUID | None:
    """The tenant in force on this connection, or None."""
    with connections[using].cursor() as cursor:
        cursor.execute("SELECT NULLIF(current_setting(%s, true), '')", [TENANT_SETTING])
        value = cursor.fetchone()[0]
    return uuid.UUID(value) if value else None
