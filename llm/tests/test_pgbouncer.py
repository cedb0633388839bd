"""Behind a transaction-mode pooler: a real PgBouncer (Debian's, 1.18 on bookworm) in front of
the test database, with the settings a deployment gets from DATABASE_URL alone.

In transaction mode every transaction of a client may run on another server session, and a
session runs many clients' transactions in turn. Whatever a client leaves in a session (a
tenant set session-wide, a prepared statement, a held cursor) reaches other clients, or is
missing on its own next transaction.
"""

import importlib.util
import json
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import environ
import psycopg
import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from django.db.backends.postgresql.base import DatabaseWrapper

from llm.models import LLMApiCall, Tenant
from llm.tests.factories import api_call_fields, record_route_call
from skeldir.embedded_database import EMBEDDED_ADDRESS_VARIABLE
from skeldir.tenancy import current_tenant_id, tenant_context

POOLED = "pooled"
PROJECT_VARIABLES = (
    "DATABASE_URL",
    "DATABASE_OWNER_URL",
    "DATABASE_PREPARED_STATEMENTS",
    "CELERY_BROKER_URL",
    EMBEDDED_ADDRESS_VARIABLE,
)


def project_settings(monkeypatch, **env: str):
    """skeldir/settings.py evaluated afresh, as a process started with `env` (and none of the
    project's other database or broker variables) gets it."""
    for name in PROJECT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(environ.Env, "read_env", staticmethod(lambda *args, **kwargs: None))  # no .env
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    spec = importlib.util.spec_from_file_location(
        "skeldir_settings_probe", Path(settings.BASE_DIR) / "skeldir" / "settings.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def uses_prepared_statements(config: dict) -> bool:
    options = config.get("OPTIONS", {})
    return options.get("prepare_threshold") is not None and options.get("server_side_binding") is True


# --- which connections get named prepared statements ------------------------------------------

DEPLOYMENT_URL = "postgresql://skeldir_app:secret@db.example:6432/skeldir"
# What the entry points set for the embedded server (skeldir/embedded_database.py): its URL,
# and its address as the mark of a connection known to be direct.
EMBEDDED_URL = "postgresql://skeldir_app@%2Frun%2Fembedded:5433/skeldir"
EMBEDDED = {"DATABASE_URL": EMBEDDED_URL, EMBEDDED_ADDRESS_VARIABLE: "/run/embedded:5433"}
# The same socket directory on another port: a pooler beside the embedded server, say.
BESIDE_EMBEDDED = {**EMBEDDED, "DATABASE_URL": "postgresql://skeldir_app@%2Frun%2Fembedded:6432/skeldir"}


@pytest.mark.parametrize(
    ("env", "variable", "prepared"),
    [
        pytest.param(EMBEDDED, None, True, id="embedded-unset"),
        pytest.param(EMBEDDED, "false", False, id="embedded-false"),
        pytest.param(BESIDE_EMBEDDED, None, False, id="not-the-embedded-address"),
        pytest.param({"DATABASE_URL": DEPLOYMENT_URL}, None, False, id="url-unset"),
        pytest.param({"DATABASE_URL": DEPLOYMENT_URL}, "auto", False, id="url-auto"),
        pytest.param({"DATABASE_URL": DEPLOYMENT_URL}, "true", True, id="url-true"),
        pytest.param({"DATABASE_URL": DEPLOYMENT_URL}, "false", False, id="url-false"),
    ],
)
def test_prepared_statements_only_where_the_connection_is_known_direct_or_said_to_be_safe(
    monkeypatch, env, variable, prepared
):
    env = dict(env)
    if variable is not None:
        env["DATABASE_PREPARED_STATEMENTS"] = variable
    project = project_settings(monkeypatch, **env)

    assert project.DATABASE_PREPARED_STATEMENTS is prepared
    for config in project.DATABASES.values():
        assert uses_prepared_statements(config) is prepared
        assert config["DISABLE_SERVER_SIDE_CURSORS"] is True
    # The development broker shares the database URL, so the same decision holds for it.
    broker_engine = project.CELERY_BROKER_TRANSPORT_OPTIONS["connect_args"]
    assert broker_engine == {"prepare_threshold": 5 if prepared else None}


def test_an_unknown_prepared_statements_value_is_refused(monkeypatch):
    with pytest.raises(ImproperlyConfigured, match="DATABASE_PREPARED_STATEMENTS"):
        project_settings(monkeypatch, DATABASE_URL=DEPLOYMENT_URL, DATABASE_PREPARED_STATEMENTS="ture")


# --- tenant isolation through the pooler, in this process ---------------------------------------


@pytest.fixture
def pooled(pgbouncer, monkeypatch):
    """Opens, in the calling thread, a connection `POOLED` to the pooler, configured as settings
    configure DATABASE_URL alone (Django's connections are per thread)."""
    config = project_settings(monkeypatch, DATABASE_URL=pgbouncer.url()).DATABASES["default"]
    assert not uses_prepared_statements(config)
    config = connections.configure_settings({"default": {}, POOLED: config})[POOLED]
    opened = []

    def open_connection() -> None:
        # Set on the handler, not added to its settings: Django's test case allows such
        # dynamically created connections in other threads.
        connections[POOLED] = DatabaseWrapper(config, alias=POOLED)
        opened.append(connections[POOLED])

    yield open_connection
    for connection in opened:
        if connection.connection is not None:  # threads close their own
            connection.close()


CLIENTS, ROUNDS = 16, 10


@pytest.mark.django_db(transaction=True)
def test_no_tenant_sees_another_through_server_sessions_shared_by_many_clients(
    pooled, pgbouncer, tenant_factory
):
    tenants = [tenant_factory.create(), tenant_factory.create()]
    next_round = threading.Barrier(CLIENTS, timeout=60)
    backends = defaultdict(set)  # client -> server sessions (backend pids) its transactions ran on
    wrong_rows, visible_without_tenant, errors = [], [], []

    def client(n: int) -> None:
        try:
            pooled()
            for r in range(ROUNDS):
                next_round.wait()  # every client's transactions interleave with everyone else's
                tenant = tenants[(n + r) % 2]
                with tenant_context(tenant.id, using=POOLED), connections[POOLED].cursor() as cursor:
                    LLMApiCall.objects.using(POOLED).create(
                        tenant_id=tenant.id, **api_call_fields(request_id=f"{tenant.id}:{n}:{r}")
                    )
                    others = LLMApiCall.objects.using(POOLED).exclude(tenant_id=tenant.id)
                    wrong_rows.extend(others.values_list("id", flat=True))
                    cursor.execute("SELECT pg_backend_pid()")
                    backends[n].add(cursor.fetchone()[0])
                # No tenant now, on whichever session the pooler gives next: nothing is visible.
                if current_tenant_id(using=POOLED) is not None or LLMApiCall.objects.using(POOLED).exists():
                    visible_without_tenant.append((n, r))
        except Exception as error:
            errors.append(error)
            next_round.abort()
        finally:
            connections[POOLED].close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert not errors, errors[:3]
    # The pool really was shared: 16 clients on at most 4 server sessions, and transactions of
    # one client ran on several of them.
    sessions = set().union(*backends.values())
    assert len(sessions) <= pgbouncer.pool_size < CLIENTS
    assert any(len(pids) > 1 for pids in backends.values()), backends
    assert wrong_rows == []
    assert visible_without_tenant == []
    for tenant in tenants:  # 0 cross-tenant rows: each row is where its writer's tenant put it
        with tenant_context(tenant.id):
            request_ids = list(LLMApiCall.objects.values_list("request_id", flat=True))
        assert len(request_ids) == CLIENTS * ROUNDS // 2
        assert all(request_id.startswith(f"{tenant.id}:") for request_id in request_ids)


@pytest.mark.django_db(transaction=True)
def test_iterating_outside_a_transaction_survives_another_client_taking_the_session(
    pooled, pgbouncer, tenant_factory
):
    # The shape of selectors.iter_tenant_ids (beat's jobs visit every tenant with it), on the
    # pooled alias; a chunk of one row so that the iterator goes back to the server.
    expected = sorted(tenant_factory.create().id for _ in range(3))
    pooled()
    rows = Tenant.objects.using(POOLED).order_by("id").values_list("id", flat=True).iterator(chunk_size=1)
    first = next(rows)
    with psycopg.connect(pgbouncer.url()) as other:
        other.execute("SELECT 1")  # an open transaction holds the session the first chunk came from
        rest = list(rows)
    assert [first, *rest] == expected


# --- the web service behind the pooler -----------------------------------------------------------

API = "/api/llm"


def seed(tenant_factory, count: int) -> dict:
    """`count` tenants, each with its own calls (tenant i: i + 2 calls of i + 3 cents each)."""
    seeded = {}
    for i in range(count):
        tenant = tenant_factory.create()
        request_ids = {f"{tenant.id}:seed:{k}" for k in range(i + 2)}
        for request_id in request_ids:
            record_route_call(tenant, cost_cents=i + 3, request_id=request_id)
        seeded[tenant.id] = {
            "key": tenant_factory.api_keys[tenant.id],
            "request_ids": request_ids,
            "cost": (i + 2) * (i + 3),
        }
    return seeded


def fire(web, requests: list[tuple]) -> list[tuple]:
    """Send the requests from 32 client threads at once; (tenant, method, path, status, body)."""

    def send(request):
        tenant_id, key, method, path, body = request
        status, answer, _ = web.request(method, path, {"Authorization": f"Bearer {key}"}, body)
        return tenant_id, method, path, status, answer

    with ThreadPoolExecutor(max_workers=32) as pool:
        return list(pool.map(send, requests))


def start_web_behind(start_gunicorn, pgbouncer, tmp_path, **env):
    # Production's command with 8 threads per worker: 16 connections for 4 server sessions.
    return start_gunicorn(
        "--threads", "8",
        DATABASE_URL=pgbouncer.url(),
        DATABASE_OWNER_URL=None,  # web gets the runtime role alone
        # The development broker, in this database and so through the pooler too.
        CELERY_BROKER_URL="",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path),
        **env,
    )  # fmt: skip


@pytest.mark.django_db(transaction=True)
def test_the_web_service_behind_pgbouncer_answers_every_request_for_its_own_tenant(
    start_gunicorn, pgbouncer, tenant_factory, tmp_path, owner_cursor
):
    seeded = seed(tenant_factory, 4)
    web = start_web_behind(start_gunicorn, pgbouncer, tmp_path, DATABASE_PREPARED_STATEMENTS=None)
    tenants = list(seeded.items())
    requests = []
    for i in range(480):
        tenant_id, tenant = tenants[i % len(tenants)]
        method, path, body = [
            ("GET", f"{API}/costs", None),
            ("GET", f"{API}/calls?limit=200", None),
            ("POST", f"{API}/route", {"prompt": {"request": f"r{i}"}}),
        ][i % 3]
        requests.append((tenant_id, tenant["key"], method, path, body))
    owner_cursor.execute("SELECT count(*) FROM kombu_message")  # not emptied between tests
    (messages_before,) = owner_cursor.fetchone()

    answers = fire(web, requests)

    failed = [(m, p, status, body[:200]) for _, m, p, status, body in answers if not 200 <= status < 300]
    assert failed == [], f"{len(failed)} of {len(answers)} failed: {failed[:3]}\n{web.output()[-3000:]}"
    for tenant_id, _, path, _, body in answers:
        tenant = seeded[tenant_id]
        if path.endswith("/costs"):
            costs = json.loads(body)
            assert (costs["tenant_id"], costs["total_calls"], costs["total_cost_cents"]) == (
                str(tenant_id),
                len(tenant["request_ids"]),
                tenant["cost"],
            )
        elif path.startswith(f"{API}/calls"):
            assert {call["request_id"] for call in json.loads(body)["items"]} == tenant["request_ids"]
    # Every accepted call was enqueued: the development broker's writes went through the pooler.
    owner_cursor.execute("SELECT count(*) FROM kombu_message")
    sent = sum(1 for _, method, *_ in answers if method == "POST")
    assert owner_cursor.fetchone()[0] - messages_before == sent


@pytest.mark.django_db(transaction=True)
def test_forced_prepared_statements_behind_pgbouncer_1_18_fail_requests(
    start_gunicorn, pgbouncer, tenant_factory, tmp_path
):
    """The fast path where it is not safe: this is what the default now avoids, and what the
    test above would catch if the default came back."""
    seeded = seed(tenant_factory, 4)
    web = start_web_behind(start_gunicorn, pgbouncer, tmp_path, DATABASE_PREPARED_STATEMENTS="true")
    tenants = list(seeded.values())
    # Reads only: the development broker's SQLAlchemy session, failing the same way, stays in
    # its aborted transaction and holds a server session until PgBouncer's query_wait_timeout.
    requests = [
        (None, tenants[i % len(tenants)]["key"], "GET", f"{API}/{['costs', 'calls'][i % 2]}", None)
        for i in range(240)
    ]

    answers = fire(web, requests)

    failed = [status for *_, status, _ in answers if status >= 500]
    assert failed, "every request succeeded with named prepared statements behind the pooler"
    assert "prepared statement" in web.output()
