"""Settlement: a budgeted call's reservation turned into its actual cost, or given back.

- `settle_call`, in the call's own transaction (call row, monthly upsert): the reservation
  settled once (a redelivery finds it settled and adds nothing), spent increased by the actual
  cost and the estimate taken back on the periods that admitted the call (a call admitted just
  before a period ends is charged to that period, whose cap admitted it), and the month's
  threshold alerts crossed by it written.
- `release_call`, in a transaction of its own, for a call that failed for good.
- `sweep_expired_reservations` (beat) releases reservations whose worker died, once their
  lease (LLM_RESERVATION_LEASE_SECONDS, longer than the task time limit) ran out.
"""

import datetime
import logging
import uuid

from django.db import connection
from django.db.models.functions import Now

from llm import selectors, sql
from llm.models import BudgetPeriod, BudgetReservation, ReservationStatus
from llm.services import alerts
from llm.services.accounting import RecordedCall
from llm.services.budgets import Admission, hour_start, month_start
from skeldir.tenancy import tenant_context

logger = logging.getLogger(__name__)


def settle_call(
    *, tenant_id: uuid.UUID, request_id: str, endpoint: str, call: RecordedCall, admission: Admission | None
) -> None:
    """In the call's transaction: its reservation settled at the actual cost on the periods
    that admitted it, once, and the month's threshold alerts crossed by it.

    A call that was recorded before (`call.created` False) is counted already: a redelivery
    finds its reservation settled and adds nothing; a call first recorded without a
    reservation (before the tenant had a budget, or by batched ingest) releases this one.
    """
    if admission is None:
        return
    if not call.created:
        _release(tenant_id=tenant_id, request_id=request_id, endpoint=endpoint)
        return
    with connection.cursor() as cursor:
        _lock_periods(cursor, request_id=request_id, endpoint=endpoint)
        cursor.execute(
            sql.SETTLE_RESERVATION_SQL,
            {
                "actual": call.cost_micros,
                "tenant_id": tenant_id,
                "request_id": request_id,
                "endpoint": endpoint,
            },
        )
        row = cursor.fetchone()
    if row is None:  # none open or released: settled already
        return
    reserved_month, spent, cap = row
    if spent is not None:
        alerts.record_threshold_alerts(
            tenant_id=tenant_id,
            month_start=reserved_month,
            spent_before=spent - call.cost_micros,
            spent_after=spent,
            cap=cap,
            thresholds=admission.thresholds,
        )


def count_unreserved_spend(
    *, tenant_id: uuid.UUID, at: datetime.datetime, cost_micros: int, thresholds: tuple[int, ...]
) -> None:
    """In a transaction that recorded calls made without a reservation (batched ingest of
    calls already made, which nothing can block any more): their cost counted in the
    budget's periods all the same, and the thresholds it crosses alerted, so no path's spend
    escapes the budget. A period with no state yet counts them when its state is created."""
    with connection.cursor() as cursor:
        month = _settle_period(cursor, tenant_id, BudgetPeriod.MONTH, month_start(at), cost_micros, 0)
        _settle_period(cursor, tenant_id, BudgetPeriod.HOUR, hour_start(at), cost_micros, 0)
    if month is not None:
        alerts.record_threshold_alerts(
            tenant_id=tenant_id,
            month_start=month_start(at),
            spent_before=month[0] - cost_micros,
            spent_after=month[0],
            cap=month[1],
            thresholds=thresholds,
        )


def _settle_period(cursor, tenant_id, period, period_start, actual, estimate) -> tuple[int, int] | None:
    """Returns the period's (spent, cap) after, if it has a state."""
    cursor.execute(
        sql.SETTLE_BUDGET_PERIOD_SQL,
        {
            "tenant_id": tenant_id,
            "period": period,
            "period_start": period_start,
            "actual": actual,
            "estimate": estimate,
        },
    )
    return cursor.fetchone()


def release_call(*, tenant_id: uuid.UUID, request_id: str, endpoint: str) -> bool:
    """Give a failed call's reservation back, in a transaction of its own; False if it had
    none open (unbudgeted, settled, or released already)."""
    with tenant_context(tenant_id):
        return _release(tenant_id=tenant_id, request_id=request_id, endpoint=endpoint)


def _lock_periods(cursor, *, request_id: str, endpoint: str) -> None:
    cursor.execute(sql.LOCK_RESERVATION_PERIODS_SQL, {"request_id": request_id, "endpoint": endpoint})


def _release(*, tenant_id, request_id, endpoint) -> bool:
    with connection.cursor() as cursor:
        _lock_periods(cursor, request_id=request_id, endpoint=endpoint)
        cursor.execute(
            sql.FINISH_RESERVATION_SQL,
            {
                "status": ReservationStatus.RELEASED,
                "actual": None,
                "tenant_id": tenant_id,
                "request_id": request_id,
                "endpoint": endpoint,
                "from_statuses": [ReservationStatus.RESERVED],
            },
        )
        row = cursor.fetchone()
        if row is None:
            return False
        _, estimate, reserved_month, reserved_hour = row
        for period, start in ((BudgetPeriod.MONTH, reserved_month), (BudgetPeriod.HOUR, reserved_hour)):
            if start is not None:
                cursor.execute(
                    sql.RELEASE_BUDGET_PERIOD_SQL,
                    {"tenant_id": tenant_id, "period": period, "period_start": start, "estimate": estimate},
                )
    return True


def sweep_expired_reservations() -> dict[str, int]:
    """Reservations still open after their lease: their worker died between reserving and
    recording (a call is recorded and settled in one transaction, so an open reservation's
    call was not recorded through it), so the estimate is given back. The lease outlasts the
    task time limit: a live worker has always finished with its reservation before it
    expires, and should a redelivery record the call later, it is counted then."""
    released = 0
    for tenant_id in selectors.iter_tenant_ids():
        with tenant_context(tenant_id):
            expired = list(
                BudgetReservation.objects.filter(
                    status=ReservationStatus.RESERVED, lease_expires_at__lt=Now()
                )
                .order_by("created_at")
                .values_list("request_id", "endpoint")
            )
        for request_id, endpoint in expired:
            with tenant_context(tenant_id):
                released += _release(tenant_id=tenant_id, request_id=request_id, endpoint=endpoint)
        if expired:
            logger.warning("tenant %s: %s expired reservation(s) released", tenant_id, len(expired))
    return {"released": released}
