"""The one module that owns the tenant variable `app.current_tenant_id`.

Row-level security policies compare every row's tenant_id with this variable. It is only
ever set transaction-locally (`set_config(..., true)`) inside `transaction.atomic()`, so a
pooled or persistent connection never carries a tenant into the next request.
"""

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse

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


def _auth_error(status: int, message: str) -> JsonResponse:
    response = JsonResponse({"error": message}, status=status)
    response["WWW-Authenticate"] = 'Bearer realm="skeldir"'
    return response


class TenantMiddleware:
    """Resolves the request's tenant from `Authorization: Bearer <tenant API key>`.

    A valid key runs the rest of the request inside that tenant's context; a malformed or
    unknown key is answered 401 here; no key at all runs the request with no tenant, which
    sees no tenant rows. `request.tenant` is the Tenant or None.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        from llm.selectors import get_tenant_by_api_key

        request.tenant = None
        header = request.headers.get("Authorization")
        if header is None:
            return self.get_response(request)
        scheme, _, api_key = header.partition(" ")
        api_key = api_key.strip()
        if scheme.lower() != "bearer" or not api_key:
            return _auth_error(401, "Authorization header must be 'Bearer <tenant API key>'.")
        tenant = get_tenant_by_api_key(api_key=api_key)
        if tenant is None:
            return _auth_error(401, "Invalid API key.")
        request.tenant = tenant
        with tenant_context(tenant.id):
            return self.get_response(request)


INSPECTED_TENANT_SESSION_KEY = "inspected_tenant_id"


class StaffTenantMiddleware:
    """Runs admin pages inside the tenant a staff member chose to inspect.

    The choice lives in the session (`INSPECTED_TENANT_SESSION_KEY`, set from the admin's
    Tenants page). With none, admin pages run with no tenant and tenant tables show nothing.
    `request.inspected_tenant` is the Tenant or None. Place after AuthenticationMiddleware.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        from django.urls import reverse

        from llm.models import Tenant

        request.inspected_tenant = None
        user = getattr(request, "user", None)
        chosen = request.session.get(INSPECTED_TENANT_SESSION_KEY) if hasattr(request, "session") else None
        if not (
            chosen
            and user
            and user.is_active
            and user.is_staff
            and request.path.startswith(reverse("admin:index"))
        ):
            return self.get_response(request)
        try:
            tenant_id = parse_tenant_id(chosen)
        except ValueError:
            del request.session[INSPECTED_TENANT_SESSION_KEY]
            return self.get_response(request)
        request.inspected_tenant = Tenant.objects.filter(id=tenant_id).first()
        if request.inspected_tenant is None:  # the tenant is gone
            del request.session[INSPECTED_TENANT_SESSION_KEY]
            return self.get_response(request)
        with tenant_context(tenant_id):
            return self.get_response(request)
