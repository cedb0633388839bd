"""Settings for the Skeldir LLM platform, read from the environment (12-factor).

Every variable is listed with its default in `.env.example` and in the README.
"""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# A local `.env` is a convenience for development; the environment always wins.
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DJANGO_DEBUG", default=False)
# The fallback key is for local development only; `manage.py check --deploy` flags it.
SECRET_KEY = env("DJANGO_SECRET_KEY", default="django-insecure-skeldir-local-development-only")
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])

INSTALLED_APPS = [
    "llm",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "skeldir.tenancy.TenantMiddleware",
]

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
            ],
        },
    },
]

# Two roles (see DESIGN.md, "Tenant isolation"): `default` is the runtime role that web,
# workers, beat and commands use; `owner` owns the tables and runs migrations. Production
# gives DATABASE_OWNER_URL only to the migrate job. Without DATABASE_URL the project runs
# an embedded PostgreSQL under `.local/` and provisions both roles itself.
CONN_MAX_AGE = env.int("DATABASE_CONN_MAX_AGE", default=60)

if env("DATABASE_URL", default=""):
    DATABASES = {"default": env.db_url("DATABASE_URL", engine="django.db.backends.postgresql")}
    if env("DATABASE_OWNER_URL", default=""):
        DATABASES["owner"] = env.db_url("DATABASE_OWNER_URL", engine="django.db.backends.postgresql")
else:
    from skeldir.embedded_database import embedded_database_settings

    DATABASES = embedded_database_settings(
        data_dir=Path(env("EMBEDDED_POSTGRES_DIR", default=str(BASE_DIR / ".local" / "postgres")))
    )

for _alias in DATABASES.values():
    _alias["CONN_MAX_AGE"] = CONN_MAX_AGE
    _alias["CONN_HEALTH_CHECKS"] = True
if "owner" in DATABASES:
    # Tests create and migrate the test database as the owner; the runtime alias then points
    # at the same test database under its own role (Django copies only the NAME to a mirror).
    DATABASES["default"]["TEST"] = {"MIRROR": "owner"}

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

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    "loggers": {"embedded_postgres": {"level": "WARNING"}},
}
