"""Tenant-scoped reads under row-level security, against the same queries without it.

The data: `per_tenant` generated calls for each of the 1,000 tenants (1M rows at full size),
spread over 90 days and written in time order, so a tenant's rows are scattered over the
table as real traffic leaves them, with the monthly rows that add them up.

What is compared, per query (see BENCHMARKS.md), all through plain psycopg in pipeline mode
(each read's statements go in one round trip, so no variant pays extra network waits):
  RLS              the runtime role (NOSUPERUSER, NOBYPASSRLS), as the application reads: the
                   query has no tenant filter; its transaction sets the tenant (BEGIN,
                   set_config, the query, COMMIT) and the policy does the filtering.
  same statements  a superuser, to whom no policy applies, runs the same transaction with an
                   explicit `WHERE tenant_id = %s` in the query: the only difference is RLS.
  bare query       the superuser runs just the query with `WHERE tenant_id = %s`: what a
                   read costs with no tenant to enter at all.
"""

from collections.abc import Callable

from bench.database import BenchDatabase, Conninfo
from bench.load import ClientFactory
from llm.sql.accounting import _CENTS_SQL, _COST_MICROS_SQL  # the formulas the recording INSERT uses

QUERIES = {
    # A tenant's latest calls: the index (tenant_id, created_at DESC), 50 rows.
    "latest 50 calls": """
        SELECT id, created_at, endpoint, model, cost_micros FROM llm_api_calls
         WHERE {tenant_filter} TRUE
         ORDER BY created_at DESC LIMIT 50
    """,
    # A tenant's spend by endpoint over the last 30 days: a third of its rows, aggregated.
    "30-day spend by endpoint": """
        SELECT endpoint, count(*), sum(cost_micros) FROM llm_api_calls
         WHERE {tenant_filter} created_at >= now() - interval '30 days'
         GROUP BY endpoint
    """,
}


# Each generated call is priced as the recording INSERT prices one (llm/sql/accounting.py): the stub
# price in force at its created_at, the same formula, cents derived half up; tokens vary so
# that costs run from a few µUSD to several cents, with none, a quarter or half the input
# tokens cached (as the stub reports them).
GENERATE_CALLS_SQL = f"""
    INSERT INTO llm_api_calls (tenant_id, created_at, endpoint, model, input_tokens,
                               cached_input_tokens, output_tokens, cost_micros, cost_cents,
                               price_id, latency_ms, request_id)
    SELECT r.tenant_id, r.created_at, r.endpoint, r.model, r.input_tokens, r.cached_input_tokens,
           r.output_tokens, c.cost_micros, {_CENTS_SQL.format(micros="c.cost_micros")}, p.id,
           r.latency_ms, r.request_id
      FROM (SELECT t.id AS tenant_id, g, t.n,
                   now() - make_interval(secs => g * (90 * 86400.0 / %(per_tenant)s) + t.n) AS created_at,
                   (ARRAY['route', 'explanation', 'investigation', 'budget_optimization'])
                       [1 + (g + t.n) %% 4] AS endpoint,
                   (ARRAY['stub-small', 'stub-medium', 'stub-large'])[1 + (g * 7 + t.n) %% 3] AS model,
                   10 + g %% 500 AS input_tokens,
                   (10 + g %% 500) * ((g + t.n) %% 3) / 4 AS cached_input_tokens,
                   1 + (g * 13 + t.n) %% 2003 AS output_tokens,
                   80 + g %% 2000 AS latency_ms,
                   'gen:' || t.n || ':' || g AS request_id
              FROM generate_series(1, %(per_tenant)s) AS g
             CROSS JOIN (SELECT id, row_number() OVER (ORDER BY id) AS n
                           FROM unnest(%(tenants)s::uuid[]) AS id) AS t) AS r
      JOIN llm_model_prices p ON p.model = r.model AND p.valid_from <= r.created_at
                             AND (p.valid_to IS NULL OR r.created_at < p.valid_to)
     CROSS JOIN LATERAL (SELECT {_COST_MICROS_SQL.format(t="r")} AS cost_micros) AS c
     ORDER BY r.g, r.n
"""

# The monthly rows as the recording upsert leaves them: exact µUSD totals, cents derived half
# up from them (the month's from its total, each model's from its own), never summed.
GENERATE_MONTHLY_COSTS_SQL = """
    INSERT INTO llm_monthly_costs (tenant_id, month, total_cost_micros, total_cost_cents,
                                   total_calls, model_breakdown)
    SELECT tenant_id, month, sum(cost_micros)::bigint, (sum(cost_micros)::bigint + 5000) / 10000,
           sum(calls)::bigint,
           jsonb_object_agg(model, jsonb_build_object(
               'calls', calls, 'cost_micros', cost_micros, 'cost_cents', (cost_micros + 5000) / 10000))
      FROM (SELECT tenant_id, date_trunc('month', created_at AT TIME ZONE 'UTC')::date AS month,
                   model, count(*) AS calls, sum(cost_micros)::bigint AS cost_micros
              FROM llm_api_calls WHERE tenant_id = ANY(%s::uuid[])
             GROUP BY 1, 2, 3) AS per_model
     GROUP BY tenant_id, month
"""


def generate_calls(database: BenchDatabase, *, tenants: list[str], per_tenant: int) -> int:
    """Insert `per_tenant` calls for each tenant and their monthly rows; returns the rows.

    As the superuser, in two statements: no policy applies to it, so one INSERT ... SELECT
    can write for every tenant (the owner is bound by FORCE ROW LEVEL SECURITY).
    """
    with database.superuser.connect(autocommit=True) as conn:
        inserted = conn.execute(GENERATE_CALLS_SQL, {"per_tenant": per_tenant, "tenants": tenants}).rowcount
        if inserted != per_tenant * len(tenants):  # a call with no price in force at its time
            raise RuntimeError(
                f"generated {inserted:,} calls, not {per_tenant * len(tenants):,}: the stub models' "
                "prices do not cover the last 90 days"
            )
        conn.execute(GENERATE_MONTHLY_COSTS_SQL, [tenants])
        conn.execute("VACUUM (ANALYZE) llm_api_calls")
        conn.execute("VACUUM (ANALYZE) llm_monthly_costs")
        return conn.execute("SELECT count(*) FROM llm_api_calls").fetchone()[0]


def _client(conninfo: Conninfo, run: Callable, tenants: list[str]) -> ClientFactory:
    def make(client: int):
        conn = conninfo.connect(autocommit=True)
        cursor = conn.cursor()

        def op(i: int) -> None:
            rows = run(conn, cursor, tenants[(client * 7919 + i * 13) % len(tenants)])
            if not rows:
                raise AssertionError("a tenant-scoped read returned no rows: the data or the tenant is wrong")

        return op, conn.close

    return make


def rls_reads(database: BenchDatabase, *, query: str, tenants: list[str]) -> ClientFactory:
    return _in_tenant_transaction(database.runtime, QUERIES[query].format(tenant_filter=""), tenants)


def unprotected_reads_same_statements(
    database: BenchDatabase, *, query: str, tenants: list[str]
) -> ClientFactory:
    sql = QUERIES[query].format(tenant_filter="tenant_id = %(tenant)s AND")
    return _in_tenant_transaction(database.superuser, sql, tenants)


def unprotected_bare_reads(database: BenchDatabase, *, query: str, tenants: list[str]) -> ClientFactory:
    sql = QUERIES[query].format(tenant_filter="tenant_id = %(tenant)s AND")

    def run(conn, cursor, tenant):
        with conn.pipeline():
            cursor.execute(sql, {"tenant": tenant})
        return cursor.fetchall()

    return _client(database.superuser, run, tenants)


def _in_tenant_transaction(conninfo: Conninfo, sql: str, tenants: list[str]) -> ClientFactory:
    def run(conn, cursor, tenant):
        with conn.pipeline():
            conn.execute("BEGIN")
            conn.execute("SELECT set_config('app.current_tenant_id', %s, true)", [tenant])
            cursor.execute(sql, {"tenant": tenant} if "%(tenant)s" in sql else None)
            conn.execute("COMMIT")
        return cursor.fetchall()

    return _client(conninfo, run, tenants)
