"""Raw SQL of call accounting: pricing and recording calls (one or a batch), the monthly
upsert, and the cost reconciliation's drift query."""

# A call's cost in µUSD from the price row `p` and the token counts in `{t}` (a row alias or
# parameters): llm/prices.py's formula, rounded half up once. Bigint arithmetic cannot
# overflow: tokens < 2^31 and prices <= 10^9 keep each product below 2^62.
_COST_MICROS_SQL = """(p.request_fee_micros
    + (({t}.input_tokens - {t}.cached_input_tokens) * p.input_micros_per_mtok
       + {t}.cached_input_tokens * p.cached_input_micros_per_mtok
       + {t}.output_tokens * p.output_micros_per_mtok
       + 500000) / 1000000)"""

# µUSD to whole cents, half up (llm/money.py's micros_to_cents), for the seed's cents columns.
_CENTS_SQL = "(({micros} + 5000) / 10000)"

# The price row in force now, i.e. at the call's created_at (both are the transaction's now()).
_PRICE_IN_FORCE_SQL = (
    "p.model = {model} AND p.valid_from <= now() AND (p.valid_to IS NULL OR now() < p.valid_to)"
)

# One call row, priced, unless (tenant, request_id, endpoint) is recorded already. The ORM
# cannot say `INSERT ... SELECT ... ON CONFLICT DO NOTHING RETURNING`: the price is looked up
# and the cost computed in the same statement, at the row's own time, so no round trip is
# added and a price change can never fall between the two. No row back means either a
# redelivery (the row exists) or no price in force (it does not): the caller tells which.
INSERT_API_CALL_SQL = f"""
    WITH t AS (SELECT %(input_tokens)s::integer AS input_tokens,
                      %(cached_input_tokens)s::integer AS cached_input_tokens,
                      %(output_tokens)s::integer AS output_tokens),
         c AS (SELECT p.id AS price_id, {_COST_MICROS_SQL.format(t="t")} AS cost_micros
                 FROM llm_model_prices p, t
                WHERE {_PRICE_IN_FORCE_SQL.format(model="%(model)s")})
    INSERT INTO llm_api_calls (tenant_id, endpoint, model, input_tokens, cached_input_tokens,
                               output_tokens, cost_micros, cost_cents, price_id, latency_ms,
                               was_cached, request_id, correlation_id, request_metadata)
    SELECT %(tenant_id)s, %(endpoint)s, %(model)s, t.input_tokens, t.cached_input_tokens,
           t.output_tokens, c.cost_micros, {_CENTS_SQL.format(micros="c.cost_micros")}, c.price_id,
           %(latency_ms)s, %(was_cached)s, %(request_id)s, %(correlation_id)s, %(request_metadata)s
      FROM t, c
    ON CONFLICT (tenant_id, request_id, endpoint) DO NOTHING
    RETURNING id, created_at, cost_micros, price_id
"""

# The models among `%s` (a text[]) with no price in force now: checked in a batch's
# transaction just before its insert, whose join with the prices would otherwise skip them.
# (A period ending between the two statements fails the batch's insert count check.)
UNPRICED_MODELS_SQL = f"""
    SELECT m.model FROM unnest(%s::text[]) AS m(model)
     WHERE NOT EXISTS (SELECT FROM llm_model_prices p WHERE {_PRICE_IN_FORCE_SQL.format(model="m.model")})
"""

# Many call rows of one tenant in one statement, the same for any batch size (one array per
# column), each priced as above. The ORM's bulk_create(ignore_conflicts=True) cannot return
# which rows it inserted, and only those may be added to the monthly totals.
INSERT_API_CALLS_BATCH_SQL = f"""
    INSERT INTO llm_api_calls (tenant_id, endpoint, model, input_tokens, cached_input_tokens,
                               output_tokens, cost_micros, cost_cents, price_id, latency_ms,
                               was_cached, request_id, correlation_id, request_metadata)
    SELECT %s, t.endpoint, t.model, t.input_tokens, t.cached_input_tokens, t.output_tokens,
           c.cost_micros, {_CENTS_SQL.format(micros="c.cost_micros")}, p.id, t.latency_ms,
           t.was_cached, t.request_id, t.correlation_id, t.request_metadata
      FROM unnest(%s::text[], %s::text[], %s::integer[], %s::integer[], %s::integer[],
                  %s::integer[], %s::boolean[], %s::text[], %s::text[], %s::jsonb[])
           WITH ORDINALITY
           AS t(endpoint, model, input_tokens, cached_input_tokens, output_tokens, latency_ms,
                was_cached, request_id, correlation_id, request_metadata, n)
      JOIN llm_model_prices p ON {_PRICE_IN_FORCE_SQL.format(model="t.model")}
      CROSS JOIN LATERAL (SELECT {_COST_MICROS_SQL.format(t="t")} AS cost_micros) c
     ORDER BY t.n
    ON CONFLICT (tenant_id, request_id, endpoint) DO NOTHING
    RETURNING model, cost_micros, created_at
"""

# The breakdown `m.model_breakdown` plus the per-model amounts in `{added}`, cents derived
# from each model's exact µUSD; entries that come to zero calls and zero µUSD disappear. No
# ORM spelling for merging two jsonb objects by key.
_MERGED_BREAKDOWN_SQL = """(
    SELECT coalesce(jsonb_object_agg(model, jsonb_build_object(
               'calls', calls, 'cost_micros', cost_micros, 'cost_cents', (cost_micros + 5000) / 10000)),
           '{{}}'::jsonb)
      FROM (SELECT key AS model,
                   sum((value ->> 'calls')::bigint)::bigint AS calls,
                   sum((value ->> 'cost_micros')::bigint)::bigint AS cost_micros
              FROM (SELECT * FROM jsonb_each(m.model_breakdown)
                    UNION ALL
                    SELECT * FROM jsonb_each({added})) AS entries
             GROUP BY key) AS merged
     WHERE calls <> 0 OR cost_micros <> 0
)"""

# Add to a tenant's month, creating the row if needed, in one statement: concurrent writers
# serialise on the row lock and each adds to what the previous one committed. The ORM has
# no upsert that adds to the existing row (update_or_create reads, then writes). The new
# row's cents come derived from the caller; an existing row's are derived again from its
# exact µUSD total, never summed from rounded calls.
ADD_TO_MONTHLY_COSTS_SQL = f"""
    INSERT INTO llm_monthly_costs AS m (tenant_id, month, total_cost_micros, total_cost_cents,
                                        total_calls, model_breakdown)
    VALUES (%s, %s, %s, %s, %s, %s)
    ON CONFLICT (tenant_id, month) DO UPDATE SET
        total_cost_micros = m.total_cost_micros + EXCLUDED.total_cost_micros,
        total_cost_cents = {_CENTS_SQL.format(micros="(m.total_cost_micros + EXCLUDED.total_cost_micros)")},
        total_calls = m.total_calls + EXCLUDED.total_calls,
        model_breakdown = {_MERGED_BREAKDOWN_SQL.format(added="EXCLUDED.model_breakdown")},
        updated_at = statement_timestamp()
"""

# Add differences, negative ones too (reconciliation's repair). An UPDATE rather than the
# upsert, whose candidate row would fail the non-negative checks before its conflict is found;
# raw for the same jsonb merge as above.
ADJUST_MONTHLY_COSTS_SQL = f"""
    UPDATE llm_monthly_costs AS m SET
        total_cost_micros = m.total_cost_micros + %s,
        total_cost_cents = {_CENTS_SQL.format(micros="(m.total_cost_micros + %s)")},
        total_calls = m.total_calls + %s,
        model_breakdown = {_MERGED_BREAKDOWN_SQL.format(added="%s::jsonb")},
        updated_at = statement_timestamp()
     WHERE m.tenant_id = %s AND m.month = %s
"""

# The first day of the current UTC month by the database clock, which is the clock that
# stamps every call's created_at. No model query needed, so no ORM spelling.
CURRENT_UTC_MONTH_SQL = "SELECT date_trunc('month', now() AT TIME ZONE 'UTC')::date"

# Months of the tenant in force whose monthly row differs from the sum of its calls, in calls
# and µUSD, per model too (the cents are derived from those). One statement, so both sides
# come from one snapshot: a call committed meanwhile is in both or in neither. A FULL JOIN of
# an aggregate with a jsonb breakdown built per model has no ORM spelling.
MONTHLY_COST_DRIFT_SQL = """
    WITH per_model AS (
        SELECT date_trunc('month', created_at AT TIME ZONE 'UTC')::date AS month, model,
               count(*) AS calls, sum(cost_micros) AS cost_micros
          FROM llm_api_calls
         GROUP BY 1, 2
    ), actual AS (
        SELECT month, sum(calls)::bigint AS calls, sum(cost_micros)::bigint AS cost_micros,
               jsonb_object_agg(model, jsonb_build_object('calls', calls, 'cost_micros', cost_micros))
                   AS breakdown
          FROM per_model
         GROUP BY month
    ), recorded AS (
        SELECT month, total_calls AS calls, total_cost_micros AS cost_micros,
               (SELECT coalesce(jsonb_object_agg(key, jsonb_build_object(
                           'calls', (value ->> 'calls')::bigint,
                           'cost_micros', (value ->> 'cost_micros')::bigint)), '{}'::jsonb)
                  FROM jsonb_each(model_breakdown)) AS breakdown
          FROM llm_monthly_costs
    )
    SELECT coalesce(a.month, r.month),
           coalesce(r.calls, 0), coalesce(r.cost_micros, 0), coalesce(r.breakdown, '{}'::jsonb),
           coalesce(a.calls, 0), coalesce(a.cost_micros, 0), coalesce(a.breakdown, '{}'::jsonb)
      FROM actual a
      FULL JOIN recorded r ON r.month = a.month
     WHERE coalesce(r.calls, 0) <> coalesce(a.calls, 0)
        OR coalesce(r.cost_micros, 0) <> coalesce(a.cost_micros, 0)
        OR coalesce(r.breakdown, '{}'::jsonb) <> coalesce(a.breakdown, '{}'::jsonb)
     ORDER BY 1
"""
