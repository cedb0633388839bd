"""The API's URL patterns: django-ninja's routes, with every answer under /api/llm/ in the
API's JSON error shape (a method a route does not take, a path no route has)."""

import functools

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import URLPattern, re_path
from django.views.decorators.csrf import csrf_exempt

from llm.api.routes import api, error_response


def _json_method_not_allowed(view):
    """django-ninja answers a method a path does not take with a plain-text 405; this API
    answers everything in its JSON error shape."""

    @functools.wraps(view)
    def wrapped(request, *args, **kwargs):
        response = view(request, *args, **kwargs)
        if response.status_code != 405:
            return response
        allowed = response.get("Allow", "")
        answer = error_response(
            request, 405, f"Method {request.method} not allowed here; allowed: {allowed}."
        )
        answer["Allow"] = allowed
        return answer

    return wrapped


@csrf_exempt
def _no_such_route(request: HttpRequest, path: str) -> HttpResponse:
    return JsonResponse({"error": f"No such route: {request.path}."}, status=404)


def api_urls() -> tuple[list, str, str]:
    """The API's URL patterns for `include`, every answer under the prefix in JSON."""
    patterns, app_name, namespace = api.urls
    wrapped = [
        URLPattern(p.pattern, _json_method_not_allowed(p.callback), p.default_args, p.name) for p in patterns
    ]
    return [*wrapped, re_path(r"^(?P<path>.*)$", _no_such_route)], app_name, namespace
