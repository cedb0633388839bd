"""Liveness and readiness probes: GET /healthz and GET /readyz.

Neither enters a tenant nor reads a tenant row. Answers name each check and a short fixed
reason, never an error text (which would carry host names, ports or role names); the details
go to the log. /readyz also names the kind of broker this process sends tasks to
(`broker_kind`), so that a web process and workers on different brokers (jobs that stay
`pending` while every probe is green) show: each worker logs its kind when it starts.
"""

import logging

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.db.migrations.loader import MigrationLoader
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from skeldir.celery_broker import broker_kind

logger = logging.getLogger(__name__)

OK = "ok"
BROKER_CONNECT_TIMEOUT_SECONDS = 2

# Set once the migrations this code ships are all applied: they stay applied for the life
# of the process, so later probes skip loading the migration graph.
_migrations_applied = False


@never_cache
@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    """The process is up and serving requests. Touches nothing else."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_safe
def readyz(request: HttpRequest) -> JsonResponse:
    """Ready for traffic: the database answers as the runtime role (one that cannot bypass
    row-level security), every migration is applied, and the broker answers. The answer
    names the broker's kind (never its address) either way."""
    checks = {"database": check_database()}
    checks["migrations"] = check_migrations() if checks["database"] == OK else "not checked"
    checks["broker"] = check_broker(database=checks["database"])
    kind = broker_kind(settings.CELERY_BROKER_URL)
    failed = [f"{name}: {result}" for name, result in checks.items() if result != OK]
    if failed:
        body = {"status": "unavailable", "reason": "; ".join(failed), "checks": checks, "broker_kind": kind}
        return JsonResponse(body, status=503)
    return JsonResponse({"status": "ready", "checks": checks, "broker_kind": kind})


def check_database(*, using: str = DEFAULT_DB_ALIAS) -> str:
    try:
        with connections[using].cursor() as cursor:
            cursor.execute("SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user")
            row = cursor.fetchone()
    except DatabaseError:
        logger.warning("readiness: database unreachable", exc_info=True)
        return "unreachable"
    if row is None or row[0]:
        # Such a role skips every row-level security policy: better down than unsealed.
        logger.error("readiness: the runtime role is a superuser or has BYPASSRLS")
        return "runtime role bypasses row-level security"
    return OK


def check_migrations(*, using: str = DEFAULT_DB_ALIAS) -> str:
    global _migrations_applied
    if _migrations_applied:
        return OK
    try:
        loader = MigrationLoader(connections[using], ignore_no_migrations=True)
        # Every migration in the graph, not just the plan to the leaves: a leaf can be
        # recorded as applied while one before it is missing.
        unapplied = [node for node in loader.graph.nodes if node not in loader.applied_migrations]
    except DatabaseError:
        logger.warning("readiness: cannot read the applied migrations", exc_info=True)
        return "unreadable"
    if unapplied:
        logger.warning("readiness: %s migration(s) not applied: run manage.py migrate", len(unapplied))
        return "not applied"
    _migrations_applied = True
    return OK


def check_broker(*, database: str) -> str:
    url = settings.CELERY_BROKER_URL
    if url.startswith("sqla+"):
        # The development broker is this database (its tables come with the migrations).
        return database
    from skeldir.celery import app

    try:
        with app.connection_for_write(url=url, connect_timeout=BROKER_CONNECT_TIMEOUT_SECONDS) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0)
    except Exception:  # kombu raises its own, redis's and socket errors alike
        logger.warning("readiness: broker unreachable", exc_info=True)
        return "unreachable"
    return OK
