"""Test set-up: a real PostgreSQL test database, created and migrated by the owner role, and
used by the tests through the runtime role (the `default` alias), exactly as in production."""

import pytest
from celery._state import _set_task_join_will_block
from django.db import connections

from llm.tests.factories import TenantFactory, ensure_test_prices
from skeldir.celery import app as celery_app
from skeldir.celery_broker import broker_url_for_database

ALL_ALIASES = ["default", "owner"]


def pytest_collection_modifyitems(items):
    # Every database test also opens the owner alias. Django flushes transactional tests only
    # through non-mirror aliases, and only the owner may TRUNCATE; without this, rows written in
    # one `transaction=True` test would survive into the next.
    for item in items:
        marker = item.get_closest_marker("django_db")
        if marker is not None and set(marker.kwargs.get("databases") or []) != set(ALL_ALIASES):
            item.add_marker(
                pytest.mark.django_db(**{**marker.kwargs, "databases": ALL_ALIASES}), append=False
            )


@pytest.fixture(scope="session")
def django_db_setup(django_test_environment, django_db_blocker):
    """Create the test database as the owner, then point the runtime alias at it."""
    from django.test.utils import setup_databases, teardown_databases

    with django_db_blocker.unblock():
        config = setup_databases(
            verbosity=0, interactive=False, aliases=set(ALL_ALIASES), serialized_aliases=set()
        )
    if celery_app.conf.broker_url.startswith("sqla+"):
        # The development broker lives in the database: tasks the tests send go to the test
        # database's queue tables, never to the development database's.
        test_broker = broker_url_for_database(connections["default"].settings_dict)
        celery_app.conf.broker_url = celery_app.conf.broker_write_url = celery_app.conf.broker_read_url = (
            test_broker
        )
    yield
    with django_db_blocker.unblock():
        for connection in connections.all():
            connection.close()
        teardown_databases(config, verbosity=0)


@pytest.fixture(autouse=True)
def price_catalogue(request):
    """Every database test finds the stub and test models priced (see ensure_test_prices)."""
    if request.node.get_closest_marker("django_db") is None:
        return
    request.getfixturevalue("_django_db_helper")  # pytest-django's database access for the marker
    ensure_test_prices()


@pytest.fixture
def tenant_factory(db):
    return TenantFactory()


@pytest.fixture
def tenant_a(tenant_factory):
    return tenant_factory.create(name="Tenant A")


@pytest.fixture
def tenant_b(tenant_factory):
    return tenant_factory.create(name="Tenant B")


@pytest.fixture
def owner_cursor(db):
    with connections["owner"].cursor() as cursor:
        yield cursor


@pytest.fixture
def run_tasks_eagerly():
    """Tasks sent on commit run at once in this process, through Celery's own `apply`."""
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = False
    # Eager apply_async marks joins as blocking in a process-wide flag, saved and restored
    # around each call: threads applying at once can leave it set, and a later test's
    # result.get() would then refuse to wait.
    _set_task_join_will_block(False)


@pytest.fixture
def api_client(client, tenant_factory):
    """A test client that authenticates as a tenant: `api_client(tenant).get(...)`."""

    def for_tenant(tenant):
        client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {tenant_factory.api_keys[tenant.id]}"
        return client

    return for_tenant


@pytest.fixture
def start_worker(tmp_path):
    """Start real `celery worker` processes (see workers.Worker); all are stopped afterwards."""
    from kombu.transport.sqlalchemy import Channel as SQLAlchemyChannel

    from llm.tests.workers import Worker

    started = []

    def start(broker: str, **kwargs) -> Worker:
        started.append(Worker(broker, tmp_path, **kwargs))
        return started[-1]

    yield start
    for worker in started:
        worker.stop()
    # kombu keeps an SQLAlchemy engine per broker URL; its pooled connection to the test
    # database would stop the test runner from dropping it.
    for engine, _ in SQLAlchemyChannel._engines.values():
        engine.dispose()


@pytest.fixture
def start_gunicorn(tmp_path):
    """Start real gunicorn servers (see workers.Gunicorn); all are stopped afterwards."""
    from llm.tests.workers import Gunicorn

    servers = []

    def start(*options: str, **env: str | None) -> Gunicorn:
        servers.append(Gunicorn(tmp_path, *options, **env))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def pgbouncer(django_db_setup, tmp_path):
    """A real PgBouncer in transaction mode in front of the test database (see pgbouncer.py)."""
    from llm.tests.pgbouncer import PGBOUNCER, PgBouncer

    if PGBOUNCER is None:
        pytest.skip("the pgbouncer binary is missing: `./dev test` installs Debian's pgbouncer package")
    bouncer = PgBouncer(tmp_path)
    yield bouncer
    bouncer.stop()


@pytest.fixture
def smtp_server(settings):
    """A real SMTP server on a free local port (servers.SMTPServer), and Django's SMTP backend
    pointed at it (pytest-django's test environment would otherwise keep mail in memory)."""
    from llm.tests.servers import SMTPServer

    server = SMTPServer().start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", server.port
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    yield server
    server.stop()


@pytest.fixture
def webhook_server():
    """A real HTTP server on a free local port that records webhooks (servers.WebhookServer)."""
    from llm.tests.servers import WebhookServer

    server = WebhookServer().start()
    yield server
    server.stop()
