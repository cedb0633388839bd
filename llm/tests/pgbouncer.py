"""A real PgBouncer (Debian's package; `./dev test` installs it) in transaction mode in front
of the test database: what a deployment behind a transaction pooler runs against.

Its pool is small, so many client connections share few server connections and consecutive
transactions of one client land on different server sessions, as they do in production.
"""

import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path

from django.db import connections

from llm.tests.workers import database_url, free_port

PGBOUNCER = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")


def _quote(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


class PgBouncer:
    """`pgbouncer` on 127.0.0.1:<free port>, pool_mode = transaction, logging to a file."""

    def __init__(self, log_dir: Path, *, pool_size: int = 4):
        upstream = connections["default"].settings_dict  # NAME is the test database's by now
        self.database = upstream["NAME"]
        self.port = free_port()
        self.pool_size = pool_size
        host = upstream["HOST"] or "127.0.0.1"  # a Unix socket directory (embedded) works as is
        # Clients are not authenticated (trust), but the runtime role must be in the auth file,
        # whose password PgBouncer uses to log in to the server (the CI server asks for it).
        auth_file = log_dir / f"pgbouncer-{self.port}.users"
        auth_file.write_text(f"{_quote(upstream['USER'])} {_quote(upstream['PASSWORD'] or '')}\n")
        config = log_dir / f"pgbouncer-{self.port}.ini"
        config.write_text(
            f"[databases]\n"
            f"{self.database} = host={host} port={upstream['PORT'] or 5432} dbname={self.database}\n"
            f"[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            f"unix_socket_dir =\n"
            f"auth_type = trust\n"
            f"auth_file = {auth_file}\n"
            f"pool_mode = transaction\n"
            f"default_pool_size = {pool_size}\n"
            f"max_client_conn = 1000\n"
            # PgBouncer refuses to run as root; it then switches to this user after start-up.
            + (f"user = {self._unprivileged_user(host)}\n" if os.geteuid() == 0 else "")
        )
        self.log = log_dir / f"pgbouncer-{self.port}.log"
        self.process = subprocess.Popen(
            [PGBOUNCER, str(config)],
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while not self._accepts():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"pgbouncer did not start:\n{self.output()[-4000:]}")
            time.sleep(0.05)

    @staticmethod
    def _unprivileged_user(host: str) -> str:
        # The owner of the embedded server's socket directory can always reach its socket.
        if host.startswith("/"):
            return pwd.getpwuid(os.stat(host).st_uid).pw_name
        return "nobody"

    def _accepts(self) -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def url(self) -> str:
        """The runtime role's connection URL with the pooler in place of the server."""
        return database_url("default", host="127.0.0.1", port=self.port)

    def output(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # SIGTERM: immediate shutdown, server connections closed
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
