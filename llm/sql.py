"""The raw SQL of the app: each statement here says something the ORM cannot.

Services (writes) and selectors (reads) execute these on Django's connection; the benchmark's
raw-SQL baseline runs the same text on plain psycopg. Parameters are always bound, never
formatted in. Schema, roles and policies are SQL too, but they live in the migrations.
"""

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

# --- budgets ---------------------------------------------------------------------------------
# Each statement below changes one period's state row in one step, holding its row lock: a
# concurrent caller waits and then sees the committed result (PostgreSQL re-checks an UPDATE's
# WHERE on the newest row version), so no number of callers can admit past the cap. Raw SQL:
# the ORM's update() cannot return the row it changed.

# Reserve `estimate` on a period if it fits: the admission check and the reservation at once.
RESERVE_BUDGET_SQL = """
    UPDATE llm_budget_state SET reserved_micros = reserved_micros + %(estimate)s,
                                updated_at = statement_timestamp()
     WHERE tenant_id = %(tenant_id)s AND period = %(period)s AND period_start = %(period_start)s
       AND spent_micros + reserved_micros + %(estimate)s <= cap_micros
    RETURNING cap_micros, cap_micros - spent_micros - reserved_micros + %(estimate)s
"""

# The calls whose cost counts in a budget period: those admitted in it (a settled
# reservation held there), and those recorded in it without one (before the tenant had a
# budget, or by batched ingest). A call admitted just before a period ends counts where it
# was admitted, even if it is recorded after: the cap that admitted it is the one it is
# charged to. (Reservations settle within their lease, so a day past the period's end
# covers every late one.)
_ATTRIBUTED_SPENT_SQL = """
    SELECT coalesce(sum(c.cost_micros), 0)::bigint
      FROM llm_api_calls c
      LEFT JOIN llm_budget_reservations r
        ON r.tenant_id = c.tenant_id AND r.request_id = c.request_id AND r.endpoint = c.endpoint
       AND r.status = 'settled'
     WHERE c.created_at >= {start}::timestamptz AND c.created_at < ({end})::timestamptz + interval '1 day'
       AND coalesce(CASE {period}::text WHEN 'month' THEN r.month_start ELSE r.hour_start END,
                    date_trunc({period}::text, c.created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')
           = {start}::timestamptz
"""

# A period's first state, with what the tenant has already spent in it (a budget set mid-month
# counts the month so far). Concurrent first callers: one inserts, the rest find it.
CREATE_BUDGET_STATE_SQL = f"""
    INSERT INTO llm_budget_state (tenant_id, period, period_start, cap_micros, spent_micros)
    VALUES (%(tenant_id)s, %(period)s, %(period_start)s, %(cap)s, (
        {_ATTRIBUTED_SPENT_SQL.format(start="%(period_start)s", end="%(period_end)s", period="%(period)s")}))
    ON CONFLICT (tenant_id, period, period_start) DO NOTHING
"""

# Mark a reservation settled (or released) and return what it held, once: the row is locked
# first, so of two concurrent finishers only one sees it open. The ORM cannot return the
# status a row had before its update.
FINISH_RESERVATION_SQL = """
    UPDATE llm_budget_reservations r
       SET status = %(status)s, actual_micros = %(actual)s, finished_at = statement_timestamp()
      FROM (SELECT id, status FROM llm_budget_reservations
             WHERE tenant_id = %(tenant_id)s AND request_id = %(request_id)s AND endpoint = %(endpoint)s
             FOR UPDATE) AS before
     WHERE r.id = before.id AND before.status = ANY(%(from_statuses)s)
    RETURNING before.status, r.estimate_micros, r.month_start, r.hour_start
"""

# Settle a call's reservation at its actual cost, once, and the periods that admitted it in the
# same statement: spent += the actual cost, reserved -= the estimate (0 when the lease sweep
# had released it already: its estimate was given back then). The caller has locked the
# periods' state rows first (LOCK_RESERVATION_PERIODS_SQL), so the reservation's status cannot
# change between the two parts. Raw SQL: the second UPDATE takes the first's RETURNING.
SETTLE_RESERVATION_SQL = """
    WITH finished AS (
        UPDATE llm_budget_reservations r
           SET status = 'settled', actual_micros = %(actual)s, finished_at = statement_timestamp()
          FROM (SELECT id, status FROM llm_budget_reservations
                 WHERE tenant_id = %(tenant_id)s AND request_id = %(request_id)s AND endpoint = %(endpoint)s
                 FOR UPDATE) AS before
         WHERE r.id = before.id AND before.status IN ('reserved', 'released')
        RETURNING before.status AS was, r.estimate_micros, r.month_start, r.hour_start
    ), settled AS (
        UPDATE llm_budget_state s
           SET spent_micros = s.spent_micros + %(actual)s,
               reserved_micros = s.reserved_micros
                                 - CASE f.was WHEN 'reserved' THEN f.estimate_micros ELSE 0 END,
               updated_at = statement_timestamp()
          FROM finished f
         WHERE s.tenant_id = %(tenant_id)s
           AND ((s.period = 'month' AND s.period_start = f.month_start)
                OR (s.period = 'hour' AND s.period_start = f.hour_start))
        RETURNING s.period, s.spent_micros, s.cap_micros
    )
    SELECT f.month_start, m.spent_micros, m.cap_micros
      FROM finished f
      LEFT JOIN settled m ON m.period = 'month'
"""

# Settle a call on the period that admitted it: spent += its actual cost, reserved -= its
# estimate (0 when the lease sweep had released it already).
SETTLE_BUDGET_PERIOD_SQL = """
    UPDATE llm_budget_state SET spent_micros = spent_micros + %(actual)s,
                                reserved_micros = reserved_micros - %(estimate)s,
                                updated_at = statement_timestamp()
     WHERE tenant_id = %(tenant_id)s AND period = %(period)s AND period_start = %(period_start)s
    RETURNING spent_micros, cap_micros
"""

# Give a released reservation's estimate back to a period.
RELEASE_BUDGET_PERIOD_SQL = """
    UPDATE llm_budget_state SET reserved_micros = reserved_micros - %(estimate)s,
                                updated_at = statement_timestamp()
     WHERE tenant_id = %(tenant_id)s AND period = %(period)s AND period_start = %(period_start)s
"""

# Periods of the tenant in force whose state disagrees with the calls counted in them (as
# above) and their open reservations, in one snapshot as the cost drift above. Months before
# hours: repairs lock them in the order admission does.
_STATE_PERIOD_END_SQL = (
    "s.period_start + CASE s.period WHEN 'month' THEN interval '1 month' ELSE interval '1 hour' END"
)
BUDGET_DRIFT_SQL = f"""
    SELECT s.period, s.period_start, s.spent_micros, s.reserved_micros, a.spent, r.reserved
      FROM llm_budget_state s
     CROSS JOIN LATERAL ({
    _ATTRIBUTED_SPENT_SQL.format(
        start="s.period_start",
        end=_STATE_PERIOD_END_SQL,
        period="s.period",
    )
}) AS a(spent)
     CROSS JOIN LATERAL (
           SELECT coalesce(sum(estimate_micros), 0)::bigint AS reserved FROM llm_budget_reservations o
            WHERE o.status = 'reserved'
              AND CASE s.period WHEN 'month' THEN o.month_start ELSE o.hour_start END = s.period_start) r
     WHERE s.spent_micros <> a.spent OR s.reserved_micros <> r.reserved
     ORDER BY s.period = 'hour', s.period_start
"""

# Repair a period's state by the differences found in one snapshot: adding them, not setting
# totals, keeps what calls settled meanwhile (they moved both sides alike).
ADJUST_BUDGET_STATE_SQL = """
    UPDATE llm_budget_state SET spent_micros = spent_micros + %(spent)s,
                                reserved_micros = reserved_micros + %(reserved)s,
                                updated_at = statement_timestamp()
     WHERE tenant_id = %(tenant_id)s AND period = %(period)s AND period_start = %(period_start)s
"""

# What a period has left (cap - spent - reserved): read after a reservation did not fit.
BUDGET_REMAINING_SQL = """
    SELECT cap_micros - spent_micros - reserved_micros FROM llm_budget_state
     WHERE tenant_id = %(tenant_id)s AND period = %(period)s AND period_start = %(period_start)s
"""

# A threshold alert, written once: of concurrent crossings the unique key lets one insert and
# the rest see nothing returned (the ORM's create would raise and abort the transaction).
INSERT_BUDGET_ALERT_SQL = """
    INSERT INTO llm_budget_alerts (tenant_id, month_start, threshold_percent, spent_micros, cap_micros)
    VALUES (%s, %s, %s, %s, %s)
    ON CONFLICT (tenant_id, month_start, threshold_percent) DO NOTHING
    RETURNING id
"""

# Whether the tenant has a budget, and if so the database's time, which the call's estimate
# is priced at (the database's clock, never the app host's: it is the clock the call is
# recorded by). Read before every call, outside any transaction (the tenants table is
# readable without a tenant). Raw because it is on every call's path, where building and
# compiling the ORM's `.filter(...).exists()` cost more client CPU than the statement.
TENANT_HAS_BUDGET_SQL = "SELECT statement_timestamp() FROM tenants WHERE id = %s AND budgeted"

# Admission's first statement, inside the tenant: its budget, the database's time and the
# call's own reservation if one is open or settled (a redelivery), and, in the same round trip,
# the common case done: a monthly-only budget whose month has its state row, a call seen for
# the first time, an estimate that fits. Then the month's reservation, the ALLOW decision and
# the reservation row (created_at: the time its estimate was priced at) are written
# (`admitted`); otherwise nothing is, and admission goes on
# step by step (RESERVE_BUDGET_SQL, ADMIT_SQL). The conditional UPDATE is the same as
# RESERVE_BUDGET_SQL's. `reservation_written` false with `admitted` true: a concurrent delivery
# of the same call inserted its reservation first (the caller rolls back).
# Raw SQL: one statement across four tables, with data-modifying CTEs.
ADMISSION_SQL = """
    WITH budget AS (
        SELECT monthly_cap_micros, hourly_cap_micros, thresholds, on_exceed, fallback_models,
               date_trunc('month', statement_timestamp() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS month_start
          FROM llm_budgets
    ), prior AS (
        SELECT model, month_start, estimate_micros, created_at, status FROM llm_budget_reservations
         WHERE request_id = %(request_id)s AND endpoint = %(endpoint)s
    ), reserved AS (
        UPDATE llm_budget_state s
           SET reserved_micros = s.reserved_micros + %(estimate)s, updated_at = statement_timestamp()
          FROM budget b
         WHERE b.hourly_cap_micros IS NULL AND NOT EXISTS (SELECT FROM prior)
           AND s.tenant_id = %(tenant_id)s AND s.period = 'month' AND s.period_start = b.month_start
           AND s.spent_micros + s.reserved_micros + %(estimate)s <= s.cap_micros
        RETURNING s.cap_micros, s.cap_micros - s.spent_micros - s.reserved_micros + %(estimate)s AS remaining
    ), decision AS (
        INSERT INTO llm_budget_decisions (tenant_id, request_id, endpoint, requested_model,
                                          resolved_model, estimate_micros, budget, cap_micros,
                                          remaining_micros, decision, reason)
        SELECT %(tenant_id)s, %(request_id)s, %(endpoint)s, %(model)s, %(model)s, %(estimate)s, 'month',
               cap_micros, remaining, 'ALLOW', %(reason)s
          FROM reserved
    ), reservation AS (
        INSERT INTO llm_budget_reservations (tenant_id, request_id, endpoint, model, estimate_micros,
                                             month_start, status, created_at, lease_expires_at)
        SELECT %(tenant_id)s, %(request_id)s, %(endpoint)s, %(model)s, %(estimate)s, b.month_start,
               'reserved', %(estimated_at)s, statement_timestamp() + make_interval(secs => %(lease)s)
          FROM reserved, budget b
        ON CONFLICT (tenant_id, request_id, endpoint) DO NOTHING
        RETURNING id
    )
    SELECT b.monthly_cap_micros, b.hourly_cap_micros, b.thresholds, b.on_exceed, b.fallback_models,
           statement_timestamp(), p.model, p.month_start, p.estimate_micros, p.created_at,
           EXISTS (SELECT FROM reserved) AS admitted, EXISTS (SELECT FROM reservation) AS reservation_written
      FROM budget b
      LEFT JOIN prior p ON p.status <> 'released'
"""

# An admitted call's decision and its reservation, in one statement (a data-modifying CTE;
# the ORM writes one table per statement). A released reservation of the same call (its
# worker died and the sweep gave it back) is taken up again; an open one is left alone and
# nothing is returned: a concurrent delivery of the same call holds it. A reservation's
# created_at is the time its estimate was priced at.
ADMIT_SQL = """
    WITH decision AS (
        INSERT INTO llm_budget_decisions (tenant_id, request_id, endpoint, requested_model,
                                          resolved_model, estimate_micros, budget, cap_micros,
                                          remaining_micros, decision, reason)
        VALUES (%(tenant_id)s, %(request_id)s, %(endpoint)s, %(requested)s, %(resolved)s,
                %(estimate)s, %(budget)s, %(cap)s, %(remaining)s, %(decision)s, %(reason)s)
    )
    INSERT INTO llm_budget_reservations AS r (tenant_id, request_id, endpoint, model, estimate_micros,
                                              month_start, hour_start, status, created_at,
                                              lease_expires_at)
    VALUES (%(tenant_id)s, %(request_id)s, %(endpoint)s, %(resolved)s, %(estimate)s, %(month_start)s,
            %(hour_start)s, 'reserved', %(estimated_at)s,
            statement_timestamp() + make_interval(secs => %(lease)s))
    ON CONFLICT (tenant_id, request_id, endpoint) DO UPDATE SET
        model = EXCLUDED.model, estimate_micros = EXCLUDED.estimate_micros, actual_micros = NULL,
        month_start = EXCLUDED.month_start, hour_start = EXCLUDED.hour_start, status = 'reserved',
        created_at = EXCLUDED.created_at, lease_expires_at = EXCLUDED.lease_expires_at, finished_at = NULL
     WHERE r.status = 'released'
    RETURNING r.id
"""

# Repairs of one tenant's books wait for each other (a transaction-scoped advisory lock keyed
# by the tenant): two concurrent `--fix` runs would otherwise both add the same difference.
RECONCILIATION_LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtext('skeldir.reconcile'), hashtext(%s))"

# Before a reservation is finished: the state rows of its periods, locked month before hour.
# Admission locks the states first and then the reservation; finishing in the same order is
# what keeps a settling worker and an admitting request of the same call from deadlocking.
LOCK_RESERVATION_PERIODS_SQL = """
    SELECT s.id FROM llm_budget_state s
      JOIN llm_budget_reservations r
        ON r.request_id = %(request_id)s AND r.endpoint = %(endpoint)s
       AND ((s.period = 'month' AND s.period_start = r.month_start)
            OR (s.period = 'hour' AND s.period_start = r.hour_start))
     ORDER BY s.period = 'hour'
       FOR UPDATE OF s
"""
