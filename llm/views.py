from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from llm import selectors


def _tenant_required() -> JsonResponse:
    return JsonResponse(
        {"error": "Authentication required: send 'Authorization: Bearer <tenant API key>'."}, status=401
    )


@require_GET
def current_month_costs(request: HttpRequest) -> JsonResponse:
    """The calling tenant's LLM spend for the current UTC month."""
    if request.tenant is None:
        return _tenant_required()
    month = selectors.current_utc_month()
    row = selectors.get_monthly_cost(month=month)
    return JsonResponse(
        {
            "tenant_id": str(request.tenant.id),
            "month": month.isoformat(),
            "total_cost_cents": row.total_cost_cents if row else 0,
            "total_calls": row.total_calls if row else 0,
            "model_breakdown": row.model_breakdown if row else {},
        }
    )
