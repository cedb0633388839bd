"""docker-compose.yml, validated without a Docker engine: it parses; every service runs a real
entry point of this project; the app services set only variables the settings read; the
database URLs name the roles the init script creates; and that init script runs the project's
own skeldir/sql/create_roles.sql, which the last test does against a real PostgreSQL."""

import ast
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import environ
import psycopg
import pytest
import yaml
from django.conf import settings
from django.core.management import get_commands
from django.urls import resolve

from skeldir.health import readyz
from skeldir.provisioning import CREATE_ROLES_SQL

BASE_DIR = Path(settings.BASE_DIR)
COMPOSE_FILE = BASE_DIR / "docker-compose.yml"
APP_IMAGE = "skeldir-llm:latest"
APP_SERVICES = {"migrate", "web", "worker", "beat"}
# What `docker compose` would read from the shell or .env; the required ones have no default.
COMPOSE_INPUTS = {
    "SKELDIR_POSTGRES_PASSWORD": "pg-superuser-secret",
    "SKELDIR_OWNER_PASSWORD": "owner0secret",
    "SKELDIR_APP_PASSWORD": "app0secret",
    "DJANGO_SECRET_KEY": "compose-test-secret-key",
}
REQUIRED_INPUTS = set(COMPOSE_INPUTS)

_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


class MissingVariable(LookupError):
    pass


def interpolate(value: object, environment: dict[str, str]) -> object:
    """Compose's variable substitution: $$, $NAME, ${NAME}, ${NAME:-default}, ${NAME:?error}."""
    if isinstance(value, dict):
        return {key: interpolate(item, environment) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, environment) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        operator, argument = match.group(2), match.group(3) or ""
        current = environment.get(name)
        unset = current is None or (operator is not None and operator.startswith(":") and current == "")
        if not unset:
            return current
        if operator in (":-", "-"):
            return argument
        if operator in (":?", "?"):
            raise MissingVariable(f"{name}: {argument}")
        return ""

    return _VARIABLE.sub(substitute, value)


@pytest.fixture(scope="module")
def raw_compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def compose(raw_compose) -> dict:
    return interpolate(raw_compose, COMPOSE_INPUTS)


def command_of(service: dict) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def settings_variables() -> set[str]:
    """Every environment variable skeldir/settings.py reads: env("X"), env.int("X"), ...,
    and database_from_url("X")."""
    tree = ast.parse((BASE_DIR / "skeldir" / "settings.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func = node.func
        reads_env = (isinstance(func, ast.Name) and func.id in {"env", "database_from_url"}) or (
            isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "env"
        )
        first = node.args[0]
        if reads_env and isinstance(first, ast.Constant) and isinstance(first.value, str):
            names.add(first.value)
    return names


def subprocess_env() -> dict[str, str]:
    """Settings that load without connecting anywhere (no embedded server is started)."""
    return {
        **os.environ,
        "DATABASE_URL": "postgresql://nobody:x@127.0.0.1:9/nowhere",
        "DJANGO_SECRET_KEY": "test",
    }


def test_the_file_parses_into_the_production_services(compose):
    assert set(compose["services"]) == {"db", "redis", *APP_SERVICES}
    db_image, redis_image = compose["services"]["db"]["image"], compose["services"]["redis"]["image"]
    assert db_image.startswith("postgres:") and int(db_image.split(":")[1].split(".")[0]) >= 17
    assert redis_image.startswith("redis:")
    for name in APP_SERVICES:
        service = compose["services"][name]
        assert service["image"] == APP_IMAGE
        assert (BASE_DIR / service["build"]["context"] / service["build"]["dockerfile"]).is_file()


def test_secrets_must_be_given_and_have_no_defaults(raw_compose):
    for name in REQUIRED_INPUTS:
        with pytest.raises(MissingVariable, match=name):
            interpolate(raw_compose, {k: v for k, v in COMPOSE_INPUTS.items() if k != name})


def test_app_services_set_only_variables_the_settings_read(compose):
    read = settings_variables()
    assert {"DATABASE_URL", "DATABASE_OWNER_URL", "CELERY_BROKER_URL", "LOG_FORMAT"} <= read
    for name in APP_SERVICES:
        unknown = set(compose["services"][name]["environment"]) - read
        assert not unknown, f"{name} sets variables the settings never read: {sorted(unknown)}"


def test_only_migrate_gets_the_owner_role(compose):
    with_owner = {
        name for name in APP_SERVICES if "DATABASE_OWNER_URL" in compose["services"][name]["environment"]
    }
    assert with_owner == {"migrate"}


def test_database_urls_name_the_roles_and_database_the_init_script_creates(compose):
    db = compose["services"]["db"]["environment"]
    runtime = environ.Env.db_url_config(compose["services"]["web"]["environment"]["DATABASE_URL"])
    owner = environ.Env.db_url_config(compose["services"]["migrate"]["environment"]["DATABASE_OWNER_URL"])
    assert (runtime["USER"], runtime["PASSWORD"]) == (
        db["SKELDIR_DB_APP_USER"],
        db["SKELDIR_DB_APP_PASSWORD"],
    )
    assert (owner["USER"], owner["PASSWORD"]) == (db["SKELDIR_DB_OWNER"], db["SKELDIR_DB_OWNER_PASSWORD"])
    assert runtime["USER"] != owner["USER"]
    assert runtime["NAME"] == owner["NAME"] == db["SKELDIR_DB_NAME"]
    assert runtime["HOST"] == owner["HOST"] == "db"
    for name in APP_SERVICES:  # one runtime role for web, worker, beat and migrate's grants
        assert (
            compose["services"][name]["environment"]["DATABASE_URL"]
            == compose["services"]["web"]["environment"]["DATABASE_URL"]
        )


def test_the_broker_is_the_redis_service(compose):
    for name in APP_SERVICES:
        assert compose["services"][name]["environment"]["CELERY_BROKER_URL"].startswith("redis://redis:6379/")


def test_services_start_in_order_and_have_health_checks(compose):
    services = compose["services"]
    assert services["migrate"]["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert services["migrate"]["restart"] == "no"
    for name in ("web", "worker", "beat"):
        assert services[name]["depends_on"] == {
            "db": {"condition": "service_healthy"},
            "redis": {"condition": "service_healthy"},
            "migrate": {"condition": "service_completed_successfully"},
        }
    for name in ("db", "redis", "web", "worker"):
        assert services[name]["healthcheck"]["test"], name


def test_migrate_runs_the_projects_owner_migrate_command(compose):
    command = command_of(compose["services"]["migrate"])
    assert command[:3] == ["python", "manage.py", "migrate"]
    assert (BASE_DIR / "manage.py").is_file()
    assert get_commands()["migrate"] == "llm"  # llm's migrate: runs as the owner alias


def test_web_runs_gunicorn_on_the_projects_wsgi_application(compose):
    command = command_of(compose["services"]["web"])
    assert command[0] == "gunicorn"
    assert "skeldir.wsgi:application" in command
    config = command[command.index("--config") + 1]
    assert (BASE_DIR / config).is_file()
    # gunicorn itself loads the config and the application and checks them.
    check = subprocess.run(
        [str(Path(sys.executable).parent / "gunicorn"), "--check-config", *command[1:]],
        cwd=BASE_DIR,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stderr[-3000:]


def test_web_health_check_probes_readiness(compose):
    probe = " ".join(compose["services"]["web"]["healthcheck"]["test"])
    path = re.search(r"http://127\.0\.0\.1:8000(/\w+)", probe).group(1)
    assert resolve(path).func is readyz


@pytest.mark.parametrize("service", ["worker", "beat"])
def test_worker_and_beat_run_the_projects_celery_app(compose, service):
    from celery.app.utils import find_app

    celery_app = find_app("skeldir")  # what `celery -A skeldir` loads
    command = command_of(compose["services"][service])
    assert command[:3] == ["celery", "-A", "skeldir"]
    assert celery_app.main == "skeldir"
    subcommand = next(part for part in command[3:] if not part.startswith("-"))
    assert subcommand == service
    if service == "worker":
        queue = command[command.index("-Q") + 1]
        assert queue == "llm" == settings.CELERY_TASK_DEFAULT_QUEUE
        for task in ("llm.route", "llm.explanation", "llm.investigation", "llm.budget_optimization"):
            assert celery_app.amqp.router.route({}, task)["queue"].name == queue
    # Celery's own command line accepts every option as written (and loads the app).
    check = subprocess.run(
        [str(Path(sys.executable).parent / "celery"), *command[1:], "--help"],
        cwd=BASE_DIR,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stderr[-3000:]


def test_worker_health_check_pings_this_worker(compose):
    probe = compose["services"]["worker"]["healthcheck"]["test"]
    assert probe[0] == "CMD-SHELL"
    assert probe[1].startswith("celery -A skeldir inspect ping --destination celery@$HOSTNAME")


def test_worker_metrics_are_served_from_a_multiprocess_directory(compose):
    for name in ("web", "worker"):
        service = compose["services"][name]
        directory = service["environment"]["PROMETHEUS_MULTIPROC_DIR"]
        assert directory in service["tmpfs"]  # empty at every start, private to the container
    worker = compose["services"]["worker"]
    assert worker["environment"]["WORKER_METRICS_PORT"] in worker["expose"]


def mounts(service: dict) -> dict[str, Path]:
    """container path -> host path, for bind mounts."""
    result = {}
    for volume in service["volumes"]:
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            result[target] = (COMPOSE_FILE.parent / source).resolve()
    return result


def test_the_database_init_script_mounts_the_projects_role_sql(compose):
    db = compose["services"]["db"]
    bound = mounts(db)
    roles_sql_target = db["environment"]["SKELDIR_ROLES_SQL"]
    assert bound[roles_sql_target] == CREATE_ROLES_SQL.resolve()  # the same file, not a copy
    init_scripts = [
        host for target, host in bound.items() if target.startswith("/docker-entrypoint-initdb.d/")
    ]
    assert len(init_scripts) == 1
    script = init_scripts[0]
    assert script.suffix == ".sh" and script.stat().st_mode & stat.S_IXUSR
    text = script.read_text()
    assert "\\i :roles_sql" in text
    used = set(re.findall(r"\$\{(SKELDIR_\w+)", text))
    assert used <= set(db["environment"]), sorted(used - set(db["environment"]))


def superuser_conninfo() -> dict | None:
    """A superuser on the test server: `postgres` on the runtime alias's host and port."""
    db = settings.DATABASES["default"]
    conninfo = {"host": db["HOST"] or "127.0.0.1", "port": str(db["PORT"] or 5432), "user": "postgres"}
    try:
        with psycopg.connect(**conninfo, dbname="postgres", connect_timeout=3) as conn:
            row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    except psycopg.Error:
        return None
    return conninfo if row[0] else None


@pytest.mark.skipif(shutil.which("psql") is None, reason="psql is not installed")
def test_the_init_script_creates_both_roles_and_the_database_on_a_real_server(compose):
    conninfo = superuser_conninfo()
    if conninfo is None:
        pytest.skip("no superuser connection to the test server")
    suffix = uuid.uuid4().hex[:8]
    names = {
        "SKELDIR_DB_NAME": f"skeldir_init_{suffix}",
        "SKELDIR_DB_OWNER": f"skeldir_init_owner_{suffix}",
        "SKELDIR_DB_APP_USER": f"skeldir_init_app_{suffix}",
    }
    script = next(host for target, host in mounts(compose["services"]["db"]).items() if "initdb.d" in target)
    env = {
        **os.environ,
        **names,
        "SKELDIR_DB_OWNER_PASSWORD": "it's an owner password",  # quoting is psql's job
        "SKELDIR_DB_APP_PASSWORD": 'a "runtime" password',
        "SKELDIR_ROLES_SQL": str(CREATE_ROLES_SQL),
        "POSTGRES_USER": "postgres",
        "POSTGRES_DB": "postgres",
        "PGHOST": conninfo["host"],
        "PGPORT": conninfo["port"],
    }
    try:
        for _ in range(2):  # the second run finds everything in place
            run = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
            assert run.returncode == 0, run.stderr
            assert "owner password" not in run.stdout + run.stderr
        with psycopg.connect(**conninfo, dbname="postgres") as conn:
            roles = {
                name: attributes
                for name, *attributes in conn.execute(
                    "SELECT rolname, rolsuper, rolbypassrls, rolcreatedb, rolpassword IS NOT NULL"
                    " FROM pg_authid WHERE rolname IN (%s, %s)",
                    [names["SKELDIR_DB_OWNER"], names["SKELDIR_DB_APP_USER"]],
                )
            }
            owner = conn.execute(
                "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s",
                [names["SKELDIR_DB_NAME"]],
            ).fetchone()
        assert roles == {
            names["SKELDIR_DB_OWNER"]: [False, False, True, True],
            names["SKELDIR_DB_APP_USER"]: [False, False, False, True],
        }
        assert owner == (names["SKELDIR_DB_OWNER"],)
        with psycopg.connect(**conninfo, dbname=names["SKELDIR_DB_NAME"]) as conn:
            schema = conn.execute(
                "SELECT pg_get_userbyid(nspowner), has_schema_privilege(%s, 'public', 'CREATE')"
                " FROM pg_namespace WHERE nspname = 'public'",
                [names["SKELDIR_DB_APP_USER"]],
            ).fetchone()
        assert schema == (names["SKELDIR_DB_OWNER"], False)
    finally:
        with psycopg.connect(**conninfo, dbname="postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{names["SKELDIR_DB_NAME"]}"')
            conn.execute(f'DROP ROLE IF EXISTS "{names["SKELDIR_DB_OWNER"]}"')
            conn.execute(f'DROP ROLE IF EXISTS "{names["SKELDIR_DB_APP_USER"]}"')
