"""The benchmark's own database: created next to the project's, migrated by the owner role.

Three connections matter here, all plain psycopg: the runtime role (what the service runs as,
bound by row-level security), the owner (migrations) and a superuser. The superuser is what
the benchmark uses where RLS must not be in force: generating 1M call rows for 1,000 tenants
in one statement, the unprotected side of the read comparison, and the exactness check over
every tenant at once. (The owner cannot do these: FORCE ROW LEVEL SECURITY binds it too, and
`SET row_security = off` only makes a query under a policy fail.)
"""

import os
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import quote

import environ
import psycopg
from psycopg.conninfo import conninfo_to_dict

from skeldir.provisioning import DatabaseLayout, provision_database

BASE_DIR = Path(__file__).resolve().parent.parent
TENANT_TABLES = (
    "llm_api_calls",
    "llm_monthly_costs",
    "investigations",
    "budget_optimization_jobs",
    "llm_budgets",
    "llm_budget_state",
    "llm_budget_reservations",
    "llm_budget_decisions",
    "llm_budget_alerts",
    "llm_alert_deliveries",
)


@dataclass(frozen=True)
class Conninfo:
    host: str
    port: str
    user: str
    password: str
    dbname: str

    def connect(self, **kwargs) -> psycopg.Connection:
        return psycopg.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=self.dbname,
            **kwargs,
        )

    def url(self) -> str:
        """A URL settings.py reads; a socket directory goes percent-encoded in the host part."""
        password = f":{quote(self.password, safe='')}" if self.password else ""
        host = quote(self.host, safe="")
        return f"postgresql://{quote(self.user, safe='')}{password}@{host}:{self.port}/{self.dbname}"

    @classmethod
    def from_url(cls, url: str) -> "Conninfo":
        parts = conninfo_to_dict(url)
        return cls(
            host=parts.get("host", ""),
            port=str(parts.get("port", "5432")),
            user=parts.get("user", ""),
            password=parts.get("password", ""),
            dbname=parts.get("dbname", ""),
        )


@dataclass(frozen=True)
class BenchDatabase:
    runtime: Conninfo
    owner: Conninfo
    superuser: Conninfo

    def server_version(self) -> str:
        with self.superuser.connect() as conn:
            return conn.execute("SELECT version()").fetchone()[0]


def prepare_database(*, name: str, superuser_url: str | None) -> BenchDatabase:
    """Create (or reuse) database `name` with the project's two roles; return its connections.

    Without DATABASE_URL: on the project's embedded PostgreSQL, whose superuser the project
    already uses. With DATABASE_URL and DATABASE_OWNER_URL: on that server, with the same
    roles, and a superuser URL you pass. Either way settings.py is then pointed at `name`.
    """
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)  # as settings.py does
    if os.environ.get("DATABASE_URL"):
        if not os.environ.get("DATABASE_OWNER_URL") or not superuser_url:
            raise SystemExit(
                "With DATABASE_URL set, the benchmark also needs DATABASE_OWNER_URL and a superuser "
                "URL (--superuser-url or BENCH_SUPERUSER_URL) to create its own database there."
            )
        runtime = Conninfo.from_url(os.environ["DATABASE_URL"])
        owner = Conninfo.from_url(os.environ["DATABASE_OWNER_URL"])
        superuser = Conninfo.from_url(superuser_url)
    else:
        from skeldir.embedded_database import (
            EMBEDDED_ADDRESS_VARIABLE,
            EMBEDDED_LAYOUT,
            start_embedded_server,
        )

        data_dir = Path(os.environ.get("EMBEDDED_POSTGRES_DIR") or BASE_DIR / ".local" / "postgres")
        info = start_embedded_server(data_dir=data_dir).get_postmaster_info()
        server = {"host": str(info.socket_dir), "port": str(info.port), "password": "", "dbname": "postgres"}
        runtime = Conninfo(user=EMBEDDED_LAYOUT.runtime_role, **server)
        owner = Conninfo(user=EMBEDDED_LAYOUT.owner_role, **server)
        superuser = Conninfo(user="postgres", **server)
        # As the project's bootstrap says it (skeldir/embedded_database.py): the connection is
        # direct, so settings.py turns DATABASE_PREPARED_STATEMENTS on when it is unset.
        os.environ[EMBEDDED_ADDRESS_VARIABLE] = f"{server['host']}:{server['port']}"
    if name in {runtime.dbname, owner.dbname} and os.environ.get("DATABASE_URL"):
        raise SystemExit(f"Refusing to benchmark in {name!r}, the database DATABASE_URL names.")
    provision_database(
        superuser_conninfo={**superuser.__dict__, "dbname": superuser.dbname or "postgres"},
        layout=DatabaseLayout(
            database=name,
            owner_role=owner.user,
            owner_password=owner.password,
            runtime_role=runtime.user,
            runtime_password=runtime.password,
        ),
    )
    database = BenchDatabase(
        runtime=replace(runtime, dbname=name),
        owner=replace(owner, dbname=name),
        superuser=replace(superuser, dbname=name),
    )
    with database.superuser.connect() as conn:
        is_superuser = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[
            0
        ]
    if not is_superuser:
        raise SystemExit(f"The superuser URL connects as {superuser.user!r}, which is not a superuser.")
    # settings.py reads these when Django starts; worker processes inherit them.
    os.environ["DATABASE_URL"] = database.runtime.url()
    os.environ["DATABASE_OWNER_URL"] = database.owner.url()
    return database


def migrate_and_reset(database: BenchDatabase) -> None:
    """Bring the schema up to date as the owner, then empty every table the benchmark writes."""
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    with database.superuser.connect(autocommit=True) as conn:
        conn.execute("TRUNCATE tenants, " + ", ".join(TENANT_TABLES))


def create_tenants(database: BenchDatabase, *, count: int, prefix: str) -> list[str]:
    """`count` tenants in one statement (superuser: no RLS on tenants, but it is faster)."""
    with database.superuser.connect(autocommit=True) as conn:
        rows = conn.execute(
            """
            INSERT INTO tenants (name, api_key_hash, notification_email)
            SELECT %s || ' ' || i, encode(sha256(convert_to(%s || i || gen_random_uuid(), 'UTF8')), 'hex'), ''
              FROM generate_series(1, %s) AS i
            RETURNING id
            """,
            [prefix, prefix, count],
        ).fetchall()
    return sorted(str(row[0]) for row in rows)


def give_budgets(database: BenchDatabase, *, tenants: list[str], monthly_cap_micros: int) -> None:
    """A monthly budget (blocking at the cap, the default thresholds) for each tenant, and the
    `budgeted` mark the per-call path reads: what `llm.services.set_budget` writes for a new
    budget, in two statements for all of them (superuser, as create_tenants)."""
    with database.superuser.connect() as conn:
        conn.execute(
            """
            INSERT INTO llm_budgets (tenant_id, monthly_cap_micros, thresholds, on_exceed, fallback_models)
            SELECT t, %s, '{50,80,100}', 'block', '{}' FROM unnest(%s::uuid[]) AS t
            """,
            [monthly_cap_micros, tenants],
        )
        conn.execute("UPDATE tenants SET budgeted = true WHERE id = ANY(%s::uuid[])", [tenants])
