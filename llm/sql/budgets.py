"""Raw SQL of budgets: admission, settlement, release, repairs and threshold alerts."""

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
# recorded by). Read before every call, before the tenant is entered (the tenants table is
# readable without one; a worker reads it in autocommit). Raw because it is on every call's
# path, where building and compiling the ORM's `.filter(...).exists()` cost more client CPU
# than the statement.
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
