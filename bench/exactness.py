"""The check every run ends with: the money adds up.

Over the whole benchmark database, as the superuser (no policy hides a tenant's rows): every
monthly row's calls, cents and per-model breakdown equal the sums of that tenant's call rows
for that month, and no month has calls without its row; and every figure recorded exactly as
many calls as its clients completed.
"""

from dataclasses import dataclass

from bench.database import BenchDatabase

DRIFT_SQL = """
    WITH per_model AS (
        SELECT tenant_id, date_trunc('month', created_at AT TIME ZONE 'UTC')::date AS month, model,
               count(*) AS calls, sum(cost_cents) AS cost_cents
          FROM llm_api_calls
         GROUP BY 1, 2, 3
    ), actual AS (
        SELECT tenant_id, month, sum(calls)::bigint AS calls, sum(cost_cents)::bigint AS cost_cents,
               jsonb_object_agg(model, jsonb_build_object('calls', calls, 'cost_cents', cost_cents))
                   AS breakdown
          FROM per_model
         GROUP BY 1, 2
    )
    SELECT coalesce(a.tenant_id, m.tenant_id), coalesce(a.month, m.month),
           m.total_calls, m.total_cost_cents, a.calls, a.cost_cents,
           m.model_breakdown = a.breakdown
      FROM actual a
      FULL JOIN llm_monthly_costs m ON m.tenant_id = a.tenant_id AND m.month = a.month
     WHERE m.total_calls IS DISTINCT FROM a.calls
        OR m.total_cost_cents IS DISTINCT FROM a.cost_cents
        OR m.model_breakdown IS DISTINCT FROM a.breakdown
"""


@dataclass(frozen=True)
class Exactness:
    call_rows: int
    cost_cents: int
    monthly_rows: int
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def check(database: BenchDatabase, *, expected_calls: dict[str, int]) -> Exactness:
    """`expected_calls`: per figure tag (the request id's first `:` field), calls completed."""
    problems = []
    with database.superuser.connect() as conn:
        for tenant, month, calls, cents, actual_calls, actual_cents, same_breakdown in conn.execute(
            DRIFT_SQL
        ):
            problems.append(
                f"tenant {tenant} {month:%Y-%m}: monthly row {calls} calls / {cents} cents, call rows "
                f"{actual_calls} / {actual_cents}{'' if same_breakdown else ', breakdowns differ'}"
            )
        recorded = dict(
            conn.execute("SELECT split_part(request_id, ':', 1), count(*) FROM llm_api_calls GROUP BY 1")
        )
        call_rows, cost_cents = conn.execute(
            "SELECT count(*), coalesce(sum(cost_cents), 0) FROM llm_api_calls"
        ).fetchone()
        monthly_rows = conn.execute("SELECT count(*) FROM llm_monthly_costs").fetchone()[0]
    for tag, calls in expected_calls.items():
        if recorded.get(tag, 0) != calls:
            problems.append(
                f"{tag}: {recorded.get(tag, 0)} call rows, but its clients completed {calls} calls"
            )
    return Exactness(call_rows, cost_cents, monthly_rows, problems)
