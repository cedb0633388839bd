"""Tenant resolution for HTTP requests: the API's tenant from its key, and the tenant a staff
member inspects in the admin. Either way the rest of the request runs inside
`skeldir.tenancy.tenant_context` for that tenant, or with no tenant at all."""

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse

from llm.models import Tenant
from llm.selectors import get_tenant_by_api_key
from skeldir.tenancy import parse_tenant_id, tenant_context


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
# Entering a tenant in the admin needs this permission (Tenant.Meta.permissions), not just
# being staff; superusers have it like every permission.
INSPECT_TENANT_PERMISSION = "llm.inspect_tenant"


class StaffTenantMiddleware:
    """Runs admin pages inside the tenant a staff member chose to inspect.

    The choice lives in the session (`INSPECTED_TENANT_SESSION_KEY`, set from the admin's
    Tenants page). With none, admin pages run with no tenant and tenant tables show nothing.
    A user without `INSPECT_TENANT_PERMISSION` (revoked since the choice, say) enters no
    tenant, and the choice is dropped. `request.inspected_tenant` is the Tenant or None.
    Place after AuthenticationMiddleware.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
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
        if not user.has_perm(INSPECT_TENANT_PERMISSION):
            del request.session[INSPECTED_TENANT_SESSION_KEY]
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
