"""Creates the database and the owner and runtime roles on a PostgreSQL server.

Used by the embedded default at start-up and by `manage.py provision_database` for a
server you run yourself. The role SQL is `skeldir/sql/create_roles.sql`, the same file the
docker-compose init script runs.
"""

from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

CREATE_ROLES_SQL = Path(__file__).resolve().parent / "sql" / "create_roles.sql"


@dataclass(frozen=True)
class DatabaseLayout:
    database: str
    owner_role: str
    runtime_role: str
    owner_password: str = ""
    runtime_password: str = ""


def provision_database(*, superuser_conninfo: str | dict, layout: DatabaseLayout) -> bool:
    """Create (or correct) both roles, then the database owned by the owner role.

    Returns True when the database was created by this call.
    """
    conninfo = superuser_conninfo if isinstance(superuser_conninfo, dict) else {}
    dsn = superuser_conninfo if isinstance(superuser_conninfo, str) else ""
    with psycopg.connect(dsn, **conninfo, autocommit=True) as conn:
        with conn.transaction():
            for name, value in (
                ("skeldir.owner_role", layout.owner_role),
                ("skeldir.owner_password", layout.owner_password),
                ("skeldir.runtime_role", layout.runtime_role),
                ("skeldir.runtime_password", layout.runtime_password),
            ):
                conn.execute("SELECT set_config(%s, %s, true)", [name, value])
            conn.execute(CREATE_ROLES_SQL.read_text())
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [layout.database]).fetchone()
        if exists:
            return False
        try:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(layout.database), sql.Identifier(layout.owner_role)
                )
            )
        except psycopg.errors.DuplicateDatabase:
            return False  # another process created it between our check and now
    with psycopg.connect(dsn, **{**conninfo, "dbname": layout.database}, autocommit=True) as conn:
        # PostgreSQL 15+ already keeps PUBLIC from creating objects in `public`; older
        # servers do not, and the runtime role must not be able to create anything.
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        conn.execute(sql.SQL("ALTER SCHEMA public OWNER TO {}").format(sql.Identifier(layout.owner_role)))
    return True
