"""/healthz and /readyz: in-process through the test client, and in a real gunicorn started
with the compose file's web command, against the test database and against a dead port."""

import json

import pytest
from django.conf import settings
from django.test import override_settings

from llm.tests.workers import database_url, free_port
from skeldir import health
from skeldir.celery_broker import broker_kind


@pytest.fixture(autouse=True)
def fresh_migration_check(monkeypatch):
    # The positive migrations result is remembered per process; each test starts without it.
    monkeypatch.setattr(health, "_migrations_applied", False)


def test_healthz_answers_without_touching_the_database(client):
    # No django_db mark: any query here would be refused by pytest-django.
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "no-cache" in response["Cache-Control"]


CONFIGURED_BROKER_KIND = (
    "redis" if settings.CELERY_BROKER_URL.startswith("redis") else "postgresql (development)"
)


@pytest.mark.django_db(transaction=True)
def test_readyz_is_ready_with_database_migrations_and_broker(client):
    response = client.get("/readyz")
    assert response.status_code == 200, response.content
    assert response.json() == {
        "status": "ready",
        "checks": {"database": "ok", "migrations": "ok", "broker": "ok"},
        "broker_kind": CONFIGURED_BROKER_KIND,
    }


@pytest.mark.django_db(transaction=True)
def test_readyz_names_the_broker_kind_never_its_address_or_credentials(client):
    """A web process on another broker than the workers leaves jobs `pending` with every check
    green: the kind it sends to is in the answer, to compare with the workers' start-up line."""
    url = f"redis://skeldir:hunter2@redis-primary.internal:{free_port()}/3"
    with override_settings(CELERY_BROKER_URL=url):
        body = client.get("/readyz").content.decode()
    assert json.loads(body)["broker_kind"] == "redis"
    for secret in ("hunter2", "skeldir", "redis-primary", url.rsplit(":", 1)[1]):
        assert secret not in body
    development = client.get("/readyz").json()
    assert development["broker_kind"] == CONFIGURED_BROKER_KIND


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("redis://:secret@redis:6379/0", "redis"),
        ("rediss://user:secret@cache.example.com:6380/1", "redis (TLS)"),
        ("amqp://guest:guest@rabbit:5672//", "rabbitmq (amqp)"),
        ("sqla+postgresql+psycopg://skeldir_app:secret@/skeldir?host=%2Ftmp", "postgresql (development)"),
        ("redis://a:1/0;redis://b:2/0", "redis"),
        ("sqs://key:secret@", "amazon sqs"),
        ("weird", "unknown"),
        ("", "unknown"),
    ],
)
def test_broker_kind_reads_only_the_scheme(url, kind):
    assert broker_kind(url) == kind


@pytest.mark.django_db(transaction=True)
def test_readyz_runs_without_a_tenant_and_a_tenant_key_changes_nothing(client, tenant_factory, tenant_a):
    api_key = tenant_factory.api_keys[tenant_a.id]
    response = client.get("/readyz", headers={"Authorization": f"Bearer {api_key}"})
    assert response.status_code == 200
    assert str(tenant_a.id) not in response.content.decode()


MIGRATION = "0003_row_level_security"


@pytest.mark.django_db(transaction=True)
def test_readyz_reports_unapplied_migrations(client, owner_cursor):
    owner_cursor.execute(
        "DELETE FROM django_migrations WHERE app = 'llm' AND name = %s RETURNING applied", [MIGRATION]
    )
    (applied,) = owner_cursor.fetchone()
    try:
        response = client.get("/readyz")
    finally:
        owner_cursor.execute(
            "INSERT INTO django_migrations (app, name, applied) VALUES ('llm', %s, %s)", [MIGRATION, applied]
        )
    assert response.status_code == 503
    assert response.json()["checks"]["migrations"] == "not applied"
    assert response.json()["reason"] == "migrations: not applied"


@pytest.mark.django_db(transaction=True)
def test_readyz_reports_an_unreachable_broker_without_naming_it(client):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    with override_settings(CELERY_BROKER_URL=dead):
        response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"] == {"database": "ok", "migrations": "ok", "broker": "unreachable"}
    assert body["broker_kind"] == "redis"
    assert body["reason"] == "broker: unreachable"
    assert "127.0.0.1" not in response.content.decode()


@pytest.mark.django_db(transaction=True)
def test_the_runtime_role_passes_the_row_level_security_check():
    # The owner role is not a superuser either; a superuser would be reported, not served.
    assert health.check_database() == "ok"
    assert health.check_database(using="owner") == "ok"


# --- a real gunicorn, as docker-compose.yml runs it -----------------------------------------


def test_gunicorn_answers_503_with_a_short_reason_when_the_database_is_unreachable(start_gunicorn, tmp_path):
    dead_port = free_port()
    web = start_gunicorn(
        DATABASE_URL=f"postgresql://skeldir_app:secret@127.0.0.1:{dead_port}/skeldir?connect_timeout=3",
        CELERY_BROKER_URL=f"redis://127.0.0.1:{dead_port}/0",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prometheus"),
    )
    assert web.get("/healthz")[:2] == (200, b'{"status": "ok"}')
    status, body, _ = web.get("/readyz")
    assert status == 503
    answer = json.loads(body)
    assert answer["status"] == "unavailable"
    assert answer["checks"] == {
        "database": "unreachable",
        "migrations": "not checked",
        "broker": "unreachable",
    }
    assert answer["reason"] == "database: unreachable; migrations: not checked; broker: unreachable"
    for secret in ("127.0.0.1", str(dead_port), "skeldir_app", "secret"):
        assert secret not in body.decode()


@pytest.mark.django_db(transaction=True)
def test_gunicorn_is_ready_against_the_test_database_and_logs_requests_as_json(start_gunicorn, tmp_path):
    web = start_gunicorn(
        DATABASE_URL=database_url("default"),
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL
        if settings.CELERY_BROKER_URL.startswith("redis")
        else "",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prometheus"),
    )
    status, body, _ = web.get("/readyz")
    assert (status, json.loads(body)["status"]) == (200, "ready"), body
    status, _, headers = web.get("/metrics")
    assert (status, headers["Content-Type"].split(";")[0]) == (200, "text/plain")
    status, _, headers = web.get("/no-such-page?token=query-secret", headers={"Idempotency-Key": "idem-42"})
    assert status == 404
    assert headers["X-Request-ID"] == "idem-42"
    lines = [json.loads(line) for line in web.output().splitlines() if line.startswith("{")]
    assert any(line["logger"] == "gunicorn.error" for line in lines)  # gunicorn's own lines too
    assert not any(line["logger"] == "gunicorn.access" for line in lines)  # it would print query strings
    request_line = next(line for line in lines if line.get("path") == "/no-such-page")
    assert request_line["request_id"] == "idem-42"
    assert request_line["status"] == 404
    assert "query-secret" not in web.output()
