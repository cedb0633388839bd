def inspected_tenant(request) -> dict:
    """The tenant staff are inspecting in the admin (set by StaffTenantMiddleware), or None."""
    return {"inspected_tenant": getattr(request, "inspected_tenant", None)}
