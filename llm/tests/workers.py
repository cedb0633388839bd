"""Real `celery worker` processes for tests: started against the test database and a real
broker (the PostgreSQL transport, or Redis when CELERY_BROKER_URL names one)."""

import os
import signal
import socket
import subprocess
import sys
import time
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
REDIS_URL = os.environ.get("CELERY_BROKER_URL", "")
REDIS_ONLY = pytest.mark.skipif(
    not REDIS_URL.startswith("redis"), reason="CELERY_BROKER_URL does not name a Redis server"
)
BROKERS = [
    pytest.param("postgres", id="postgresql-transport"),
    pytest.param("redis", id="redis", marks=REDIS_ONLY),
]


def database_url(alias: str) -> str:
    db = connections[alias].settings_dict  # NAME is the test database's by now
    user = quote(db["USER"], safe="")
    password = f":{quote(db['PASSWORD'], safe='')}" if db.get("PASSWORD") else ""
    return (
        f"postgresql://{user}{password}@{quote(db['HOST'] or '', safe='')}:{db['PORT'] or 5432}/{db['NAME']}"
    )


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
