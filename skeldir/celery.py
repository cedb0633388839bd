"""The Celery app: `celery -A skeldir worker -Q llm` and `celery -A skeldir beat` (Celery finds
`skeldir.celery`). Configuration is the CELERY_* part of the Django settings. Django
processes load it from `llm.apps`, so tasks they send use this app's broker."""

import os

from celery import Celery, signals
from django.db import close_old_connections

from skeldir.embedded_database import use_embedded_database_unless_configured

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "skeldir.settings")
use_embedded_database_unless_configured()

app = Celery("skeldir")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Celery's Django fixup closes every database connection around every task unless this is
# set, so each task would open a new PostgreSQL session (BENCHMARKS.md measured it). Treat a
# task as Django treats a request instead, below. The tenant setting is transaction-local,
# so a reused connection carries no tenant from one task into the next.
app.conf.CELERY_DB_REUSE_MAX = 2**62


@signals.task_prerun.connect(weak=False, dispatch_uid="skeldir.close_old_connections.prerun")
@signals.task_postrun.connect(weak=False, dispatch_uid="skeldir.close_old_connections.postrun")
def _close_old_connections(task=None, **kwargs) -> None:
    """Drop connections past CONN_MAX_AGE or left broken, as Django does around a request.
    Not for in-process (eager) runs, which may sit inside the caller's transaction."""
    if not getattr(getattr(task, "request", None), "is_eager", False):
        close_old_connections()
