"""Structured JSON logs with the ids of the request or task each line belongs to.

The standard library's logging, not structlog: Django, Celery, gunicorn and kombu all log
through it already, so one formatter and one filter on the handler cover every line from
every library with no second logging pipeline to keep in step.

The ids live in one context variable: the request middleware binds them for a request (the
outermost one names it, the one after the tenant middleware adds the tenant); Celery's
task_prerun starts a task's context with its id, the LLM task base adds its payload's ids
once it has validated it, and task_postrun restores what was there before (a task applied
in-process inside a request gives the request its ids back).

Prompts are never logged: the formatter writes a fixed set of fields and never a record's
`args` or arbitrary `extra` (Celery passes a task's arguments, prompt included, that way);
the filter withholds the message bodies Celery dumps when it cannot run a message; tasks are
published with their arguments withheld from `argsrepr`; and the LOGGING settings keep the
loggers that print SQL parameters or task arguments at INFO.
"""

import datetime
import json
import logging
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from types import MappingProxyType

from celery import signals as celery_signals
from django.core.signals import request_finished
from django.http import HttpRequest, HttpResponse

CONTEXT_FIELDS = ("tenant_id", "request_id", "correlation_id", "task_id")
# The only `extra` keys the formatter writes (request and task summaries); anything else a
# library attaches to a record (Celery's task arguments, say) stays out of the output.
EXTRA_FIELDS = ("task_name", "state", "method", "path", "status", "duration_ms")
# Probes and scrapes every few seconds would drown the request log: they log at DEBUG.
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
MAX_ID_LENGTH = 200

EMPTY_CONTEXT: Mapping[str, str | None] = MappingProxyType(dict.fromkeys(CONTEXT_FIELDS))
_log_context: ContextVar[Mapping[str, str | None]] = ContextVar("skeldir_log_context", default=EMPTY_CONTEXT)

request_logger = logging.getLogger("skeldir.request")
task_logger = logging.getLogger("skeldir.task")


def current_log_context() -> dict[str, str | None]:
    return dict(_log_context.get())


def bind_log_context(**fields: object) -> Token:
    """Add `fields` (a subset of CONTEXT_FIELDS) to the current context; returns a reset token."""
    unknown = set(fields) - set(CONTEXT_FIELDS)
    if unknown:
        raise ValueError(f"unknown log context fields: {sorted(unknown)}")
    values = {name: None if value is None else str(value) for name, value in fields.items()}
    return _log_context.set(MappingProxyType({**_log_context.get(), **values}))


def reset_log_context(token: Token | None = None) -> None:
    """Restore the context before `token`'s bind, or clear it."""
    if token is None:
        _log_context.set(EMPTY_CONTEXT)
        return
    try:
        _log_context.reset(token)
    except ValueError:  # bound in another context (a thread handing over): start clean
        _log_context.set(EMPTY_CONTEXT)


@contextmanager
def log_context(**fields: object) -> Iterator[None]:
    token = bind_log_context(**fields)
    try:
        yield
    finally:
        reset_log_context(token)


def _withheld_celery_messages() -> dict[str, tuple[str, tuple[int, ...]]]:
    """Celery's consumer prints a whole message body (a prompt among it) and its headers
    when it cannot run a message: these lines keep what they say but not the body."""
    from celery.worker.consumer import consumer

    withheld = "(message body and headers withheld: they may hold a prompt)"
    return {
        consumer.UNKNOWN_FORMAT: (f"Received and deleted an unknown message {withheld}", ()),
        consumer.UNKNOWN_TASK_ERROR: (f"Discarded a message for unregistered task %s {withheld}", (0,)),
        consumer.INVALID_TASK_ERROR: (f"Discarded an invalid task message: %s {withheld}", (0,)),
        consumer.MESSAGE_DECODE_ERROR: (
            f"Cannot decode a message: %r [type:%r encoding:%r] {withheld}",
            (0, 1, 2),
        ),
    }


class ContextFilter(logging.Filter):
    """Copies the bound ids onto every record that passes the handler and withholds the
    message bodies Celery would print; it never drops a record."""

    _withheld: dict[str, tuple[str, tuple[int, ...]]] | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _log_context.get().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        if isinstance(record.args, Mapping) and getattr(record, "task_id", None) is None:
            # Celery's worker-side lines about a task ("Task llm.route[<id>] received"), logged
            # before the task runs, pass its id in their format arguments.
            task_id = record.args.get("id")
            if isinstance(task_id, str) and record.name.startswith("celery."):
                record.task_id = task_id
        if record.name.startswith("celery.worker") and isinstance(record.msg, str):
            if ContextFilter._withheld is None:
                ContextFilter._withheld = _withheld_celery_messages()
            replacement = ContextFilter._withheld.get(record.msg)
            if replacement is not None and isinstance(record.args, tuple):
                message, kept = replacement
                record.msg, record.args = message, tuple(record.args[i] for i in kept)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the four ids, then extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            entry[name] = getattr(record, name, None)
        for name in EXTRA_FIELDS:
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class PlainFormatter(logging.Formatter):
    """LOG_FORMAT=plain, for reading in a terminal: the ids that are set, then the message."""

    def format(self, record: logging.LogRecord) -> str:
        ids = " ".join(f"{n}={getattr(record, n)}" for n in CONTEXT_FIELDS if getattr(record, n, None))
        line = f"{self.formatTime(record)} {record.levelname} {record.name} {'[' + ids + '] ' if ids else ''}"
        line += record.getMessage()
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


# --- requests -------------------------------------------------------------------------------


def _header_id(request: HttpRequest, name: str) -> str | None:
    value = (request.headers.get(name) or "").strip()
    if value and len(value) <= MAX_ID_LENGTH and value.isprintable():
        return value
    return None


class RequestLogContextMiddleware:
    """Outermost middleware: names the request for its log lines and answers X-Request-ID.

    request_id: the Idempotency-Key header (what the API records the call under), else
    X-Request-ID (a proxy's), else a new one. correlation_id: X-Correlation-ID, else the
    request_id. The ids stay bound until Django's request_finished, so Django's own
    "Not Found"/"Internal Server Error" lines, logged after the middleware, carry them too.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = (
            _header_id(request, "Idempotency-Key") or _header_id(request, "X-Request-ID") or uuid.uuid4().hex
        )
        _log_context.set(EMPTY_CONTEXT)
        bind_log_context(
            request_id=request_id, correlation_id=_header_id(request, "X-Correlation-ID") or request_id
        )
        started = time.perf_counter()
        response = self.get_response(request)
        response["X-Request-ID"] = request_id
        request_logger.log(
            logging.DEBUG if request.path in QUIET_PATHS else logging.INFO,
            "%s %s %s",
            request.method,
            request.path,  # never the query string
            response.status_code,
            extra={
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )
        return response


class TenantLogContextMiddleware:
    """After the middleware that resolves the tenant: adds it to the request's log lines.

    The API's tenant (`request.tenant`, from its key) or, on admin pages, the tenant a staff
    member is inspecting (`request.inspected_tenant`), when that middleware runs before this.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        tenant = getattr(request, "tenant", None) or getattr(request, "inspected_tenant", None)
        if tenant is not None:
            bind_log_context(tenant_id=tenant.id)
        return self.get_response(request)


def _clear_request_context(**kwargs) -> None:
    _log_context.set(EMPTY_CONTEXT)


request_finished.connect(_clear_request_context, dispatch_uid="skeldir.logs.clear_request_context")


# --- Celery tasks ---------------------------------------------------------------------------

_task_tokens: dict[str, tuple[Token, float]] = {}


@celery_signals.task_prerun.connect(weak=False, dispatch_uid="skeldir.logs.task_prerun")
def _bind_task_context(task_id=None, **_) -> None:
    """A task run starts a context of its own, with its id; a task that validates an LLM
    payload adds that payload's ids (llm.tasks.LLMTask) once it has parsed it."""
    fields = {**EMPTY_CONTEXT, "task_id": task_id}
    _task_tokens[task_id] = (_log_context.set(MappingProxyType(fields)), time.perf_counter())


@celery_signals.task_postrun.connect(weak=False, dispatch_uid="skeldir.logs.task_postrun")
def _restore_task_context(sender=None, task_id=None, task=None, state=None, **_) -> None:
    token, started = _task_tokens.pop(task_id, (None, time.perf_counter()))
    task = task or sender
    task_logger.info(
        "task %s %s in %.3fs",
        getattr(task, "name", "?"),
        (state or "unknown").lower(),
        time.perf_counter() - started,
        extra={
            "task_name": getattr(task, "name", None),
            "state": state,
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
        },
    )
    reset_log_context(token)


@celery_signals.before_task_publish.connect(weak=False, dispatch_uid="skeldir.logs.before_task_publish")
def _withhold_task_arguments(headers=None, **_) -> None:
    """Celery shows `argsrepr`/`kwargsrepr` in worker logs, events, `celery inspect` and
    monitoring tools; by default they are the arguments themselves, prompt included."""
    if isinstance(headers, dict):
        headers["argsrepr"] = "(withheld)"
        headers["kwargsrepr"] = "(withheld)"


@celery_signals.setup_logging.connect(weak=False, dispatch_uid="skeldir.logs.setup_logging")
def _use_django_logging(**_) -> None:
    """With a receiver here, Celery adds no handler of its own: every line is Django's JSON.

    Django has configured LOGGING by the time workers and beat set up logging; configuring
    it again here covers a process where it has not.
    """
    import logging.config

    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)
