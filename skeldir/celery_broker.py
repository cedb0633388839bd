"""The Celery broker URL: the development default built from the database, and what kind of
broker a URL names, for readiness answers and start-up log lines (never a host or a secret)."""

from urllib.parse import quote, urlencode


def broker_url_for_database(database: dict) -> str:
    """kombu's SQLAlchemy-transport URL for a Django database (the development broker)."""
    user = quote(database["USER"], safe="")
    password = quote(database.get("PASSWORD") or "", safe="")
    credentials = f"{user}:{password}" if password else user
    host, port = database.get("HOST") or "", str(database.get("PORT") or "")
    if host.startswith("/"):  # a Unix socket directory goes in the query string
        query = urlencode({"host": host, **({"port": port} if port else {})})
        return f"sqla+postgresql+psycopg://{credentials}@/{database['NAME']}?{query}"
    netloc = f"{host}:{port}" if port else host
    return f"sqla+postgresql+psycopg://{credentials}@{netloc}/{database['NAME']}"


DEVELOPMENT_BROKER_KIND = "postgresql (development)"

# URL schemes (kombu's transport aliases) and the kind of broker each names.
_BROKER_KINDS = {
    "redis": "redis",
    "rediss": "redis (TLS)",
    "sentinel": "redis (sentinel)",
    "amqp": "rabbitmq (amqp)",
    "amqps": "rabbitmq (amqps)",
    "pyamqp": "rabbitmq (amqp)",
    "librabbitmq": "rabbitmq (amqp)",
    "sqs": "amazon sqs",
    "memory": "memory (this process only)",
}


def broker_kind(url: str) -> str:
    """What kind of broker `url` names: `redis`, `postgresql (development)`, ... Only the
    scheme is read, so the answer never carries a host, port, user or password. Processes
    that should share a broker (web, worker, beat, commands) must report the same kind."""
    first = (url or "").split(";")[0].strip()  # kombu: `;` separates failover URLs
    scheme, separator, _ = first.partition("://")
    scheme = scheme.lower()
    if not separator or not scheme:
        return "unknown"
    if scheme.startswith("sqla+"):
        return DEVELOPMENT_BROKER_KIND if scheme[5:].startswith("postgresql") else "sqlalchemy (development)"
    if scheme in _BROKER_KINDS:
        return _BROKER_KINDS[scheme]
    return scheme if scheme.replace("+", "").replace("-", "").isalnum() else "unknown"


def result_backend_kind(backend: str) -> str:
    """What kind of result backend a CELERY_RESULT_BACKEND value names, without its URL."""
    backend = (backend or "").strip()
    if backend.startswith("django-"):  # django-celery-results: the `django-db` or `django-cache` alias
        return f"{backend} (this database)" if backend == "django-db" else backend
    return broker_kind(backend) if "://" in backend else (backend or "none")
