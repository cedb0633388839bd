"""Real `celery worker`, `gunicorn` and `./dev serve` processes for tests, started against the
test database; workers with a real broker (the PostgreSQL transport, or Redis when
CELERY_BROKER_URL names one)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection, connections
from kombu import Connection

from llm.models import LLMApiCall
from llm.payloads import LLMTaskPayload, task_arguments
from llm.tasks import LLM_TASKS
from skeldir.celery_broker import broker_url_for_database
from skeldir.tenancy import tenant_context

BASE_DIR = Path(settings.BASE_DIR)
GUNICORN = str(Path(sys.executable).parent / "gunicorn")
REDIS_URL = os.environ.get("CELERY_BROKER_URL", "")
REDIS_ONLY = pytest.mark.skipif(
    not REDIS_URL.startswith("redis"), reason="CELERY_BROKER_URL does not name a Redis server"
)
BROKERS = [
    pytest.param("postgres", id="postgresql-transport"),
    pytest.param("redis", id="redis", marks=REDIS_ONLY),
]


def database_url(alias: str, *, host: str | None = None, port: int | None = None) -> str:
    """The alias's connection as a URL; `host` and `port` replace its server's (a pooler's)."""
    db = connections[alias].settings_dict  # NAME is the test database's by now
    user = quote(db["USER"], safe="")
    password = f":{quote(db['PASSWORD'], safe='')}" if db.get("PASSWORD") else ""
    host = quote(db["HOST"] or "", safe="") if host is None else host
    return f"postgresql://{user}{password}@{host}:{port or db['PORT'] or 5432}/{db['NAME']}"


def broker_url(broker: str) -> str:
    return REDIS_URL if broker == "redis" else broker_url_for_database(connection.settings_dict)


class Worker:
    """`celery -A skeldir worker -Q llm` in its own process group, logging to a file."""

    def __init__(self, broker: str, log_dir: Path, concurrency: int = 2, **extra_env: str):
        env = {
            **os.environ,
            "DATABASE_URL": database_url("default"),
            "DATABASE_OWNER_URL": database_url("owner"),
            "CELERY_RESULT_BACKEND": "django-db",
            **extra_env,
        }
        env.pop("CELERY_BROKER_URL", None)
        if broker == "redis":
            env["CELERY_BROKER_URL"] = REDIS_URL
        self.log = log_dir / f"worker-{uuid.uuid4().hex[:8]}.log"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "skeldir", "worker", "-Q", "llm",
             "-c", str(concurrency), "--without-gossip", "--without-mingle", "--without-heartbeat",
             "-n", f"test-{uuid.uuid4().hex[:8]}@%h", "--loglevel", "INFO"],
            cwd=BASE_DIR, env=env, stdout=self.log.open("w"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self.wait_for_log("ready.", timeout=60)

    def output(self) -> str:
        return self.log.read_text()

    def wait_for_log(self, text: str, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"worker never logged {text!r}:\n{self.output()[-4000:]}")
            time.sleep(0.1)

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


def send(broker: str, endpoint: str, payload: LLMTaskPayload) -> str:
    """Publish one task on the test's broker; returns the task id."""
    with Connection(broker_url(broker)) as conn:
        return LLM_TASKS[endpoint].apply_async(**task_arguments(endpoint, payload), connection=conn).id


def wait_for_calls(tenant, expected: int, *, timeout: float, worker: Worker) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with tenant_context(tenant.id):
            count = LLMApiCall.objects.count()
        if count >= expected or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert count == expected, f"{count} of {expected} calls recorded; worker log:\n{worker.output()[-4000:]}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class HttpServer:
    """A web server process of the project on a free local port, logging to a file."""

    port: int
    log: Path
    process: subprocess.Popen

    def wait_until_healthy(self, name: str, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.get("/healthz")[0] != 200:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{name} did not come up:\n{self.output()[-4000:]}")
            time.sleep(0.2)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, headers: dict | None = None) -> tuple[int, bytes, dict]:
        return self.request("GET", path, headers)

    def request(
        self, method: str, path: str, headers: dict | None = None, body: object = None
    ) -> tuple[int, bytes, dict]:
        """(status, body, headers); status 0 when no answer came."""
        request = urllib.request.Request(
            f"{self.url}{path}",
            method=method,
            headers={**(headers or {}), **({"Content-Type": "application/json"} if body is not None else {})},
            data=None if body is None else json.dumps(body).encode(),
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read(), dict(response.headers)
        except urllib.error.HTTPError as error:
            return error.code, error.read(), dict(error.headers)
        except OSError:
            return 0, b"", {}

    def output(self) -> str:
        return self.log.read_text()


class Gunicorn(HttpServer):
    """The web service as docker-compose.yml runs it (`options` add to its command line; a
    variable given as None is removed from the environment)."""

    def __init__(self, log_dir: Path, *options: str, **env: str | None):
        environment = {**os.environ, "DJANGO_SECRET_KEY": "test", **env}
        environment = {name: value for name, value in environment.items() if value is not None}
        self.port = free_port()
        self.log = log_dir / f"gunicorn-{self.port}.log"
        self.process = subprocess.Popen(
            [GUNICORN, "--config", "docker/gunicorn.conf.py", "--workers", "2", *options,
             "--bind", f"127.0.0.1:{self.port}", "skeldir.wsgi:application"],
            cwd=BASE_DIR, env=environment,
            stdout=self.log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.wait_until_healthy("gunicorn", timeout=60)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


class DevServer(HttpServer):
    """`./dev serve` itself, the README's way to open the admin (migrate, collect the static
    files, runserver), on a free port against the test database, with DEBUG off and static
    serving not asked for: whatever it serves, the command arranges on its own."""

    def __init__(self, log_dir: Path):
        environment = {
            **os.environ,
            "DATABASE_URL": database_url("default"),
            "DATABASE_OWNER_URL": database_url("owner"),
            "DJANGO_DEBUG": "false",
            "DJANGO_SERVE_STATIC": "false",
        }
        self.port = free_port()
        self.log = log_dir / f"dev-serve-{self.port}.log"
        self.process = subprocess.Popen(
            [str(BASE_DIR / "dev"), "serve", f"127.0.0.1:{self.port}", "--noreload"],
            cwd=BASE_DIR, env=environment,
            stdout=self.log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        # Longer than gunicorn's: the first run may install requirements.txt into .venv.
        self.wait_until_healthy("./dev serve", timeout=180)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
