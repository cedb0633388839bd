"""The Celery app: `celery -A skeldir worker -Q llm` and `celery -A skeldir beat` (Celery finds
`skeldir.celery`). Configuration is the CELERY_* part of the Django settings. Django
processes load it from `llm.apps`, so tasks they send use this app's broker."""

import logging
import os

from celery import Celery, signals
from django.db import close_old_connections

from skeldir.celery_broker import broker_kind, result_backend_kind
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


logger = logging.getLogger("skeldir.celery")


@signals.celeryd_after_setup.connect(weak=False, dispatch_uid="skeldir.log_worker_broker")
def _log_worker_broker(sender=None, instance=None, **kwargs) -> None:
    """Say at start-up which kind of broker and which queues this worker consumes (never the
    broker's address or credentials): a web process sending to another broker leaves its
    jobs `pending` forever, and this line next to /readyz's `broker_kind` shows it."""
    queues = sorted(instance.app.amqp.queues.consume_from) if instance is not None else []
    logger.info(
        "worker %s consumes queue(s) %s from the %s broker; results: %s. Web, beat and commands "
        "must send to the same broker (the same CELERY_BROKER_URL).",
        sender,
        ", ".join(queues) or "(none)",
        broker_kind(app.conf.broker_url),
        result_backend_kind(app.conf.result_backend),
    )


@signals.beat_init.connect(weak=False, dispatch_uid="skeldir.log_beat_broker")
def _log_beat_broker(**kwargs) -> None:
    logger.info(
        "beat sends to the %s broker (CELERY_BROKER_URL); workers must consume from the same broker.",
        broker_kind(app.conf.broker_url),
    )
