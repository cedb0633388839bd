"""The check every run ends with: the money adds up, in µUSD.

Over the whole benchmark database, as the superuser (no policy hides a tenant's rows): every
monthly row's calls and µUSD, in total and per model of its breakdown, equal the sums of that
tenant's call rows for that month, its cents (total and per model) are the cents derived half
up from those exact µUSD, and no month has calls without its row; and every figure recorded
exactly as many calls as its clients completed.

For the budgeted tenants, too: no budget period spent beyond its cap (0 overshoot), its spent
is the sum of the settled reservations it admitted and nothing stays reserved once every
call has finished, every call row has one settled reservation at its exact cost (and every
settled reservation its call), and one decision per attempt: an ALLOW per reservation, and
a BLOCK per call the clients saw blocked.
"""

from dataclasses import dataclass

from bench.database import BenchDatabase

# Cents derived from exact µUSD, half up, as llm.money.micros_to_cents does.
_CENTS = "(({} + 5000) / 10000)"

DRIFT_SQL = f"""
    WITH per_model AS (
        SELECT tenant_id, date_trunc('month', created_at AT TIME ZONE 'UTC')::date AS month, model,
               count(*) AS calls, sum(cost_micros)::bigint AS cost_micros
          FROM llm_api_calls
         GROUP BY 1, 2, 3
    ), actual AS (
        SELECT tenant_id, month, sum(calls)::bigint AS calls, sum(cost_micros)::bigint AS cost_micros,
               jsonb_object_agg(model, jsonb_build_object(
                   'calls', calls, 'cost_micros', cost_micros, 'cost_cents', {_CENTS.format("cost_micros")}))
                   AS breakdown
          FROM per_model
         GROUP BY 1, 2
    ), checked AS (
        SELECT coalesce(a.tenant_id, m.tenant_id) AS tenant_id, coalesce(a.month, m.month) AS month,
               m.total_calls, m.total_cost_micros, m.total_cost_cents, a.calls, a.cost_micros,
               m.total_calls IS NOT DISTINCT FROM a.calls AS calls_ok,
               m.total_cost_micros IS NOT DISTINCT FROM a.cost_micros AS micros_ok,
               m.total_cost_cents IS NOT DISTINCT FROM {_CENTS.format("m.total_cost_micros")} AS cents_ok,
               m.model_breakdown IS NOT DISTINCT FROM a.breakdown AS breakdown_ok
          FROM actual a
          FULL JOIN llm_monthly_costs m ON m.tenant_id = a.tenant_id AND m.month = a.month
    )
    SELECT tenant_id, month, total_calls, total_cost_micros, total_cost_cents, calls, cost_micros,
           cents_ok, breakdown_ok
      FROM checked
     WHERE NOT (calls_ok AND micros_ok AND cents_ok AND breakdown_ok)
     ORDER BY tenant_id, month
"""


BUDGET_STATES_SQL = """
    SELECT s.tenant_id, s.period, s.period_start, s.cap_micros, s.spent_micros, s.reserved_micros,
           coalesce(r.settled, 0)::bigint, coalesce(r.open, 0)::bigint
      FROM llm_budget_state s
      LEFT JOIN LATERAL (
            SELECT sum(actual_micros) FILTER (WHERE status = 'settled') AS settled,
                   sum(estimate_micros) FILTER (WHERE status = 'reserved') AS open
              FROM llm_budget_reservations r
             WHERE r.tenant_id = s.tenant_id
               AND s.period_start = CASE s.period WHEN 'month' THEN r.month_start ELSE r.hour_start END
           ) r ON true
     ORDER BY s.tenant_id, s.period, s.period_start
"""

# Budgeted calls without exactly their settled reservation, and settled reservations without a call.
UNMATCHED_SQL = """
    SELECT (SELECT count(*)
              FROM llm_api_calls c
              JOIN tenants t ON t.id = c.tenant_id AND t.budgeted
              LEFT JOIN llm_budget_reservations r
                ON (r.tenant_id, r.request_id, r.endpoint) = (c.tenant_id, c.request_id, c.endpoint)
               AND r.status = 'settled'
             WHERE r.actual_micros IS DISTINCT FROM c.cost_micros),
           (SELECT count(*)
              FROM llm_budget_reservations r
             WHERE r.status = 'settled'
               AND NOT EXISTS (SELECT FROM llm_api_calls c
                                WHERE (c.tenant_id, c.request_id, c.endpoint)
                                    = (r.tenant_id, r.request_id, r.endpoint))),
           (SELECT count(*) FROM llm_budget_reservations),
           (SELECT count(*) FILTER (WHERE decision = 'ALLOW') FROM llm_budget_decisions),
           (SELECT count(*) FILTER (WHERE decision = 'BLOCK') FROM llm_budget_decisions)
"""


@dataclass(frozen=True)
class Exactness:
    call_rows: int
    cost_micros: int
    monthly_rows: int
    budget_states: int
    budget_spent_micros: int
    overshoot_micros: int  # the most any budget period spent beyond its cap
    highest_fill: float  # the fullest budget period, spent / cap
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def check(database: BenchDatabase, *, expected_calls: dict[str, int], expected_blocks: int) -> Exactness:
    """`expected_calls`: per figure tag (the request id's first `:` field), calls completed;
    `expected_blocks`: the calls the clients saw refused by a budget."""
    problems = []
    with database.superuser.connect() as conn:
        for (
            tenant,
            month,
            calls,
            micros,
            cents,
            actual_calls,
            actual_micros,
            cents_ok,
            breakdown_ok,
        ) in conn.execute(DRIFT_SQL):
            where = f"tenant {tenant} {month:%Y-%m}"
            if calls is None:
                problems.append(f"{where}: {actual_calls} calls / {actual_micros} µUSD but no monthly row")
            elif actual_calls is None:
                problems.append(f"{where}: a monthly row of {calls} calls / {micros} µUSD but no call rows")
            else:
                problems.append(
                    f"{where}: monthly row {calls} calls / {micros} µUSD / {cents} cents, call rows "
                    f"{actual_calls} / {actual_micros} µUSD"
                    + ("" if cents_ok else ", cents not derived half up from the µUSD total")
                    + ("" if breakdown_ok else ", per-model breakdowns differ")
                )
        recorded = dict(
            conn.execute("SELECT split_part(request_id, ':', 1), count(*) FROM llm_api_calls GROUP BY 1")
        )
        call_rows, cost_micros = conn.execute(
            "SELECT count(*), coalesce(sum(cost_micros), 0)::bigint FROM llm_api_calls"
        ).fetchone()
        monthly_rows = conn.execute("SELECT count(*) FROM llm_monthly_costs").fetchone()[0]
        states = conn.execute(BUDGET_STATES_SQL).fetchall()
        calls_unmatched, reservations_unmatched, reservations, allowed, blocked = conn.execute(
            UNMATCHED_SQL
        ).fetchone()
    overshoot, fill, spent_total = 0, 0.0, 0
    for tenant, period, start, cap, spent, reserved, settled, still_open in states:
        where = f"tenant {tenant} {period} from {start:%Y-%m-%d %H:%M}"
        overshoot, fill, spent_total = (
            max(overshoot, spent - cap),
            max(fill, spent / cap),
            spent_total + spent,
        )
        if spent > cap:
            problems.append(f"{where}: spent {spent} µUSD over its cap of {cap} µUSD")
        if spent != settled:
            problems.append(f"{where}: spent {spent} µUSD, its settled reservations {settled} µUSD")
        if reserved != still_open or reserved:
            problems.append(
                f"{where}: {reserved} µUSD reserved ({still_open} in open reservations) at the end"
            )
    if calls_unmatched or reservations_unmatched:
        problems.append(
            f"{calls_unmatched} budgeted call(s) without their settled reservation at their cost, "
            f"{reservations_unmatched} settled reservation(s) without their call"
        )
    if allowed != reservations:
        problems.append(f"{allowed} ALLOW decisions for {reservations} reservations")
    if blocked != expected_blocks:
        problems.append(f"{blocked} BLOCK decisions, but the clients saw {expected_blocks} calls blocked")
    for tag, calls in expected_calls.items():
        if recorded.get(tag, 0) != calls:
            problems.append(
                f"{tag}: {recorded.get(tag, 0)} call rows, but its clients completed {calls} calls"
            )
    return Exactness(
        call_rows, cost_micros, monthly_rows, len(states), spent_total, overshoot, fill, problems
    )
