"""The raw SQL of the app: each statement here says something the ORM cannot.

Services (writes) and selectors (reads) execute these on Django's connection; the benchmark's
raw-SQL baseline runs the same text on plain psycopg. Parameters are always bound, never
formatted in. Schema, roles and policies are SQL too, but they live in the migrations.
"""

# One call row, unless (tenant, request_id, endpoint) is recorded already. The ORM cannot say
# `ON CONFLICT DO NOTHING RETURNING`, and the returned row (or its absence) is what tells a
# new call from a redelivery, in the same round trip.
INSERT_API_CALL_SQL = """
    INSERT INTO llm_api_calls (tenant_id, endpoint, model, input_tokens, output_tokens,
                               cost_cents, latency_ms, was_cached, request_id,
                               correlation_id, request_metadata)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (tenant_id, request_id, endpoint) DO NOTHING
    RETURNING id, created_at
"""

# Many call rows of one tenant in one statement, the same for any batch size (one array per
# column). The ORM's bulk_create(ignore_conflicts=True) cannot return which rows it inserted,
# and only those may be added to the monthly totals.
INSERT_API_CALLS_BATCH_SQL = """
    INSERT INTO llm_api_calls (tenant_id, endpoint, model, input_tokens, output_tokens,
                               cost_cents, latency_ms, was_cached, request_id,
                               correlation_id, request_metadata)
    SELECT %s, * FROM unnest(%s::text[], %s::text[], %s::integer[], %s::integer[],
                             %s::bigint[], %s::integer[], %s::boolean[], %s::text[],
                             %s::text[], %s::jsonb[])
    ON CONFLICT (tenant_id, request_id, endpoint) DO NOTHING
    RETURNING model, cost_cents, created_at
"""

# The breakdown `m.model_breakdown` plus the per-model amounts in `{added}`; entries that come
# to zero calls and zero cents disappear. No ORM spelling for merging two jsonb objects by key.
_MERGED_BREAKDOWN_SQL = """(
    SELECT coalesce(jsonb_object_agg(model, jsonb_build_object('calls', calls, 'cost_cents', cost_cents)),
                    '{{}}'::jsonb)
      FROM (SELECT key AS model,
                   sum((value ->> 'calls')::bigint) AS calls,
                   sum((value ->> 'cost_cents')::bigint) AS cost_cents
              FROM (SELECT * FROM jsonb_each(m.model_breakdown)
                    UNION ALL
                    SELECT * FROM jsonb_each({added})) AS entries
             GROUP BY key) AS merged
     WHERE calls <> 0 OR cost_cents <> 0
)"""

# Add to a tenant's month, creating the row if needed, in one statement: concurrent writers
# serialise on the row lock and each adds to what the previous one committed. The ORM has
# no upsert that adds to the existing row (update_or_create reads, then writes).
ADD_TO_MONTHLY_COSTS_SQL = f"""
    INSERT INTO llm_monthly_costs AS m (tenant_id, month, total_cost_cents, total_calls, model_breakdown)
    VALUES (%s, %s, %s, %s, %s)
    ON CONFLICT (tenant_id, month) DO UPDATE SET
        total_cost_cents = m.total_cost_cents + EXCLUDED.total_cost_cents,
        total_calls = m.total_calls + EXCLUDED.total_calls,
        model_breakdown = {_MERGED_BREAKDOWN_SQL.format(added="EXCLUDED.model_breakdown")},
        updated_at = statement_timestamp()
"""

# Add differences, negative ones too (reconciliation's repair). An UPDATE rather than the
# upsert, whose candidate row would fail the non-negative checks before its conflict is found;
# raw for the same jsonb merge as above.
ADJUST_MONTHLY_COSTS_SQL = f"""
    UPDATE llm_monthly_costs AS m SET
        total_cost_cents = m.total_cost_cents + %s,
        total_calls = m.total_calls + %s,
        model_breakdown = {_MERGED_BREAKDOWN_SQL.format(added="%s::jsonb")},
        updated_at = statement_timestamp()
     WHERE m.tenant_id = %s AND m.month = %s
"""

# The first day of the current UTC month by the database clock, which is the clock that
# stamps every call's created_at. No model query needed, so no ORM spelling.
CURRENT_UTC_MONTH_SQL = "SELECT date_trunc('month', now() AT TIME ZONE 'UTC')::date"

# Months of the tenant in force whose monthly row differs from the sum of its calls. One
# statement, so both sides come from one snapshot: a call committed meanwhile is in both or
# in neither. A FULL JOIN of an aggregate with a jsonb breakdown built per model has no ORM
# spelling.
MONTHLY_COST_DRIFT_SQL = """
    WITH per_model AS (
        SELECT date_trunc('month', created_at AT TIME ZONE 'UTC')::date AS month, model,
               count(*) AS calls, sum(cost_cents) AS cost_cents
          FROM llm_api_calls
         GROUP BY 1, 2
    ), actual AS (
        SELECT month, sum(calls)::bigint AS calls, sum(cost_cents)::bigint AS cost_cents,
               jsonb_object_agg(model, jsonb_build_object('calls', calls, 'cost_cents', cost_cents))
                   AS breakdown
          FROM per_model
         GROUP BY month
    )
    SELECT coalesce(a.month, m.month),
           coalesce(m.total_calls, 0), coalesce(m.total_cost_cents, 0),
           coalesce(m.model_breakdown, '{}'::jsonb),
           coalesce(a.calls, 0), coalesce(a.cost_cents, 0), coalesce(a.breakdown, '{}'::jsonb)
      FROM actual a
      FULL JOIN llm_monthly_costs m ON m.month = a.month
     WHERE coalesce(m.total_calls, 0) <> coalesce(a.calls, 0)
        OR coalesce(m.total_cost_cents, 0) <> coalesce(a.cost_cents, 0)
        OR coalesce(m.model_breakdown, '{}'::jsonb) <> coalesce(a.breakdown, '{}'::jsonb)
     ORDER BY 1
"""
